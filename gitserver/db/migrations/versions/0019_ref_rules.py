"""protected references: rule sets, users' emails and signing keys, the rule set of a ref update

Rule lists per repository (and per tenant, as defaults) are versioned rows of ``rule_sets``;
each ref update records the rule set that judged it in ``ref_updates.rules`` (null before this
migration and when no list was in force), and under ``require_signed`` the signature result of
each new commit in ``ref_updates.signatures``. ``user_emails`` and ``signing_keys`` say whose key
may sign a commit (docs/ref-rules.md).

Revision ID: 0019_ref_rules
Revises: 0018_pipeline_log_pruned
Create Date: 2026-12-07 14:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0019_ref_rules'
down_revision = '0018_pipeline_log_pruned'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rule_sets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('repo_id', sa.Integer(), nullable=True),
        sa.Column('rules', sa.Text(), nullable=False),
        sa.Column('previous_id', sa.Integer(), nullable=True),
        sa.Column('changed_by', sa.String(length=300), nullable=False),
        sa.Column('changed_by_user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['changed_by_user_id'], ['users.id'], name=op.f('fk_rule_sets_changed_by_user_id_users')),
        sa.ForeignKeyConstraint(['previous_id'], ['rule_sets.id'], name=op.f('fk_rule_sets_previous_id_rule_sets')),
        sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_rule_sets_repo_id_repositories')),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_rule_sets_tenant_id_tenants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_sets')))
    with op.batch_alter_table('rule_sets', schema=None) as batch_op:
        batch_op.create_index('ix_rule_sets_owner', ['tenant_id', 'repo_id', 'id'], unique=False)
    op.create_table(
        'user_emails',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_user_emails_tenant_id_tenants')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_emails_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_emails')),
        sa.UniqueConstraint('tenant_id', 'email', name=op.f('uq_user_emails_tenant_id_email')))
    with op.batch_alter_table('user_emails', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_emails_user_id'), ['user_id'], unique=False)
    op.create_table(
        'signing_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('fingerprint', sa.String(length=80), nullable=False),
        sa.Column('key_data', sa.Text(), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('ssh', 'gpg')", name=op.f('ck_signing_keys_kind')),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_signing_keys_tenant_id_tenants')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_signing_keys_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_keys')),
        sa.UniqueConstraint('tenant_id', 'kind', 'fingerprint', name=op.f('uq_signing_keys_tenant_id_kind_fingerprint')))
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_keys_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('ref_updates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rules', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('signatures', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ref_updates', schema=None) as batch_op:
        batch_op.drop_column('signatures')
        batch_op.drop_column('rules')
    for table, index in (('signing_keys', 'ix_signing_keys_user_id'), ('user_emails', 'ix_user_emails_user_id'),
                         ('rule_sets', 'ix_rule_sets_owner')):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
        op.drop_table(table)
