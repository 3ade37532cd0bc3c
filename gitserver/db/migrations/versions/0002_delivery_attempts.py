"""delivery attempts: one row per webhook/callback attempt (the stored delivery log)

Until now a delivery kept only its last answer and one text line per attempt, and its request
headers were rebuilt for display with the webhook's current secret. This table keeps every
attempt as it was sent and answered. Deliveries made before this migration have no rows here
(what they sent was never stored); their text log lines stay in ``deliveries.error``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:35:39.150513
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('request_url', sa.String(length=2000), nullable=False),
    sa.Column('request_method', sa.String(length=10), nullable=False),
    sa.Column('request_headers', sa.Text(), nullable=False),
    sa.Column('request_body_sha256', sa.String(length=64), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_headers', sa.Text(), nullable=False),
    sa.Column('response_excerpt', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.CheckConstraint("outcome IN ('delivered', 'retrying', 'failed')", name=op.f('ck_delivery_attempts_outcome')),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempts_delivery_id'), ['delivery_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_attempts_delivery_id'))

    op.drop_table('delivery_attempts')
