"""web console: one-time sign-in links and browser sessions

``ssh git@host login`` stores a link (its secret's hash, the user, when it expires and when
it was used); opening it creates a console session (the cookie secret's hash, the user, the
session's CSRF token, its expiry and sign-out time). Both tables are new: nothing to migrate.

Revision ID: 0023_console_sessions
Revises: 0022_lfs_objects_and_locks
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0023_console_sessions'
down_revision = '0022_lfs_objects_and_locks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'console_logins',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_console_logins_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_console_logins')),
        sa.UniqueConstraint('secret_hash', name=op.f('uq_console_logins_secret_hash')),
    )
    with op.batch_alter_table('console_logins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_logins_user_id'), ['user_id'], unique=False)
    op.create_table(
        'console_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_console_sessions_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions')),
        sa.UniqueConstraint('secret_hash', name=op.f('uq_console_sessions_secret_hash')),
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_user_id'))
    op.drop_table('console_sessions')
    with op.batch_alter_table('console_logins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_logins_user_id'))
    op.drop_table('console_logins')
