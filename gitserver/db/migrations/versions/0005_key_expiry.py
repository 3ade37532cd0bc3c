"""key expiry: an SSH key added with an expiring API token expires with it

Keys added before this migration never expire (expires_at null), as before.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0005_issue11_key_expiry
Revises: 0004_issue11_quotas
Create Date: 2026-11-26 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_issue11_key_expiry'
down_revision = '0004_issue11_quotas'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('public_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('public_keys', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
