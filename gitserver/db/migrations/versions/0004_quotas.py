"""quotas: per-tenant and per-repository disk quotas (quota_bytes)

Null means no quota, which is what every existing tenant and repository gets.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0004_issue11_quotas
Revises: 0003
Create Date: 2026-11-26 12:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_issue11_quotas'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_bytes', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('repositories', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_bytes', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('repositories', schema=None) as batch_op:
        batch_op.drop_column('quota_bytes')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('quota_bytes')
