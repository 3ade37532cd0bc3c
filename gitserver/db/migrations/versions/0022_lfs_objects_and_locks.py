"""git lfs: the objects each repository holds, and the file locks

``lfs_objects`` lists the LFS objects of a repository (the content is in the object store,
by SHA-256; these rows give access and count in the quotas); ``lfs_locks`` holds git-lfs's
file locks, one per path and repository.

Revision ID: 0022_lfs_objects_and_locks
Revises: 0021_ssh_certificates
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0022_lfs_objects_and_locks'
down_revision = '0021_ssh_certificates'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'lfs_objects',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('repo_id', sa.Integer(), nullable=False),
        sa.Column('oid', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_lfs_objects_repo_id_repositories')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lfs_objects')),
        sa.UniqueConstraint('repo_id', 'oid', name=op.f('uq_lfs_objects_repo_id_oid')),
    )
    op.create_index(op.f('ix_lfs_objects_repo_id'), 'lfs_objects', ['repo_id'], unique=False)
    op.create_table(
        'lfs_locks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('repo_id', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('ref_name', sa.String(length=1024), nullable=False),
        sa.Column('owner_user_id', sa.Integer(), nullable=True),
        sa.Column('owner_name', sa.String(length=200), nullable=False),
        sa.Column('locked_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_lfs_locks_repo_id_repositories')),
        sa.ForeignKeyConstraint(['owner_user_id'], ['users.id'], name=op.f('fk_lfs_locks_owner_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lfs_locks')),
        sa.UniqueConstraint('repo_id', 'path', name=op.f('uq_lfs_locks_repo_id_path')),
    )
    op.create_index(op.f('ix_lfs_locks_repo_id'), 'lfs_locks', ['repo_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_lfs_locks_repo_id'), table_name='lfs_locks')
    op.drop_table('lfs_locks')
    op.drop_index(op.f('ix_lfs_objects_repo_id'), table_name='lfs_objects')
    op.drop_table('lfs_objects')
