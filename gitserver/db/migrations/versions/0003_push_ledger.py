"""push ledger: a push's intent is recorded before its refs move (pushes.state), and the
reconciler's last view of each repository's refs (repositories.refs_fingerprint)

Existing pushes were recorded after their refs moved, so they are ``done``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pushes') as batch:
        batch.add_column(sa.Column('state', sa.String(length=20), nullable=False, server_default='done'))
        batch.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f('ix_pushes_state'), ['state'], unique=False)
        batch.create_check_constraint(
            'state', "state IN ('pending', 'done', 'recovered', 'failed')")
    with op.batch_alter_table('repositories') as batch:
        batch.add_column(sa.Column('refs_fingerprint', sa.String(length=64), nullable=False,
                                   server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('repositories') as batch:
        batch.drop_column('refs_fingerprint')
    with op.batch_alter_table('pushes') as batch:
        batch.drop_constraint(batch.f('ck_pushes_state'), type_='check')
        batch.drop_index(batch.f('ix_pushes_state'))
        batch.drop_column('finished_at')
        batch.drop_column('state')
