"""ssh certificates: tenant CAs, principal records, CA revocations, the certificate of a push

A tenant trusts user CAs (``ssh_cas``); a principal record (``ssh_principals``, unique
site-wide) names the one user a certificate principal logs in as; ``ssh_ca_revocations``
refuses a CA's certificates by serial or key id. A push made with a certificate records the
CA's fingerprint, the key id and the serial; pushes before this migration were made with
plain keys (empty, null).

Revision ID: 0021_ssh_certificates
Revises: 0019_ref_rules
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0021_ssh_certificates'
down_revision = '0019_ref_rules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ssh_cas',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=80), nullable=False),
        sa.Column('key_data', sa.Text(), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_ssh_cas_tenant_id_tenants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ssh_cas')),
        sa.UniqueConstraint('tenant_id', 'fingerprint', name=op.f('uq_ssh_cas_tenant_id_fingerprint')),
    )
    with op.batch_alter_table('ssh_cas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssh_cas_fingerprint'), ['fingerprint'], unique=False)
        batch_op.create_index(batch_op.f('ix_ssh_cas_tenant_id'), ['tenant_id'], unique=False)
    op.create_table(
        'ssh_principals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('principal', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_ssh_principals_tenant_id_tenants')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ssh_principals_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ssh_principals')),
        sa.UniqueConstraint('principal', name=op.f('uq_ssh_principals_principal')),
    )
    with op.batch_alter_table('ssh_principals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssh_principals_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ssh_principals_user_id'), ['user_id'], unique=False)
    op.create_table(
        'ssh_ca_revocations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ca_id', sa.Integer(), nullable=False),
        sa.Column('serial', sa.String(length=20), nullable=True),
        sa.Column('key_id', sa.String(length=1024), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('(serial IS NULL) <> (key_id IS NULL)', name=op.f('ck_ssh_ca_revocations_one_of')),
        sa.ForeignKeyConstraint(['ca_id'], ['ssh_cas.id'], name=op.f('fk_ssh_ca_revocations_ca_id_ssh_cas'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ssh_ca_revocations')),
        sa.UniqueConstraint('ca_id', 'key_id', name=op.f('uq_ssh_ca_revocations_ca_id_key_id')),
        sa.UniqueConstraint('ca_id', 'serial', name=op.f('uq_ssh_ca_revocations_ca_id_serial')),
    )
    with op.batch_alter_table('ssh_ca_revocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ssh_ca_revocations_ca_id'), ['ca_id'], unique=False)
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cert_ca_fingerprint', sa.String(length=80), server_default='',
                                      nullable=False))
        batch_op.add_column(sa.Column('cert_key_id', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('cert_serial', sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.drop_column('cert_serial')
        batch_op.drop_column('cert_key_id')
        batch_op.drop_column('cert_ca_fingerprint')
    op.drop_table('ssh_ca_revocations')
    op.drop_table('ssh_principals')
    op.drop_table('ssh_cas')
