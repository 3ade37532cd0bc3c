"""repositories: parent_project and owner_groups as sent to Repour's /internal-scm

PNC creates its repositories with ``{"project", "owner_groups", "parent_project"}``; the owner
groups are LDAP names (``ldap/jboss-prod``) that need not name a gitserver group, so both are
recorded as sent. Both columns are nullable: repositories made before, or through the REST
API, have neither.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0015_issue15
Revises: 0014_issue14
Create Date: 2026-11-26 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_issue15'
down_revision = '0014_issue14'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('repositories') as batch:
        batch.add_column(sa.Column('parent_project', sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column('owner_groups', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('repositories') as batch:
        batch.drop_column('owner_groups')
        batch.drop_column('parent_project')
