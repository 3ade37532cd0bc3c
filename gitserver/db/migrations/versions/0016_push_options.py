"""push options: the ``git push -o`` options of each push, stored as a JSON list

Pushes recorded before this migration had no options (the server did not accept any), so
they get an empty list.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0016_issue12
Revises: 0015_issue15
Create Date: 2026-11-26 12:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016_issue12'
down_revision = '0015_issue15'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('push_options', sa.Text(), server_default='[]', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.drop_column('push_options')
