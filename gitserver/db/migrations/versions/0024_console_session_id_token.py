"""web console: a single sign-on session keeps its ID token

``console_sessions.id_token`` (nullable text): the ID token the OIDC issuer signed the session
in with, sent back as ``id_token_hint`` when the user signs out, so the issuer ends its own
session too (RP-initiated logout). Sessions a sign-in link opened have none; existing rows
get NULL (they sign out locally, as before).

Revision ID: 0024_console_session_id_token
Revises: 0023_console_sessions
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0024_console_session_id_token'
down_revision = '0023_console_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id_token', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_column('id_token')
