"""tenant webhooks (webhooks.tenant_id, exactly one owner) and the tenant's create template

A webhook belongs to a repository or, new here, to a whole tenant. ``tenants.create_template``
names the repository whose pipeline file runs when a repository is created in the tenant.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0014_issue14
Revises: 0005_issue11_key_expiry
Create Date: 2026-11-26 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_issue14'
down_revision = '0005_issue11_key_expiry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhooks') as batch:
        batch.add_column(sa.Column('tenant_id', sa.Integer(), nullable=True))
        batch.alter_column('repo_id', existing_type=sa.Integer(), nullable=True)
        batch.create_index(batch.f('ix_webhooks_tenant_id'), ['tenant_id'], unique=False)
        batch.create_foreign_key(batch.f('fk_webhooks_tenant_id_tenants'), 'tenants', ['tenant_id'], ['id'])
        batch.create_check_constraint('one_owner', '(repo_id IS NULL) <> (tenant_id IS NULL)')
    with op.batch_alter_table('tenants') as batch:
        batch.add_column(sa.Column('create_template', sa.String(length=100), nullable=False,
                                   server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('tenants') as batch:
        batch.drop_column('create_template')
    op.execute("DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT d.id FROM deliveries d "
               "JOIN webhooks w ON w.id = d.webhook_id WHERE w.tenant_id IS NOT NULL)")
    op.execute("DELETE FROM deliveries WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id IS NOT NULL)")
    op.execute("DELETE FROM webhooks WHERE tenant_id IS NOT NULL")
    with op.batch_alter_table('webhooks') as batch:
        batch.drop_constraint(batch.f('ck_webhooks_one_owner'), type_='check')
        batch.drop_constraint(batch.f('fk_webhooks_tenant_id_tenants'), type_='foreignkey')
        batch.drop_index(batch.f('ix_webhooks_tenant_id'))
        batch.alter_column('repo_id', existing_type=sa.Integer(), nullable=False)
        batch.drop_column('tenant_id')
