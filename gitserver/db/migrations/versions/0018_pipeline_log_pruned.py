"""pipeline log retention: when a pipeline's log was pruned

The worker deletes the logs of pipelines that ended more than
``pipeline_log_retention_days`` ago and records when in ``pipelines.log_pruned_at``, so the
log API can tell a pruned log from an empty one. Pipelines before this migration kept their
logs (null).

Revision ID: 0018_pipeline_log_pruned
Revises: 0017_issue13
Create Date: 2026-12-07 12:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018_pipeline_log_pruned'
down_revision = '0017_issue13'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('log_pruned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_pipelines_log_retention', ['log_pruned_at', 'finished_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.drop_index('ix_pipelines_log_retention')
        batch_op.drop_column('log_pruned_at')
