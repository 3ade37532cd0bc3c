"""Tenants: create, look up, list, and the settings only a tenant has (its create template, its
quota).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import Conflict, Forbidden, InvalidInput, NotFound
from gitserver.policy.names import name_problem, validate_name


def get_tenant(session: Session, name: str) -> models.Tenant:
    # A name that could never have been created is simply not found; checking first also keeps
    # hostile strings (NUL bytes, megabytes) away from the database.
    if name_problem(name):
        raise NotFound(f"tenant {name[:100]!r} not found")
    tenant = session.scalar(select(models.Tenant).where(models.Tenant.name == name))
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found")
    return tenant


def create_tenant(session: Session, name: str, description: str = "") -> models.Tenant:
    validate_name(name, "name")
    if session.scalar(select(models.Tenant.id).where(models.Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = models.Tenant(name=name, description=description)
    session.add(tenant)
    base.flush(session, f"tenant {name!r} already exists")
    return tenant


def tenants_query(visible_tenant_id: int | None = None) -> Select[Any]:
    """All tenants, or only one (what a non-site-admin may see)."""
    query = select(models.Tenant)
    if visible_tenant_id is not None:
        query = query.where(models.Tenant.id == visible_tenant_id)
    return query


def set_create_template(session: Session, tenant: models.Tenant, name: str) -> None:
    """Name the repository of ``tenant`` whose pipeline file runs when a repository is created
    in it; "" for none. The repository must exist (a typo would silently never run)."""
    if name:
        validate_name(name, "create_template")
        exists = session.scalar(select(models.Repository.id).where(models.Repository.tenant_id == tenant.id,
                                                                  models.Repository.name == name))
        if exists is None:
            raise InvalidInput(f"create_template: tenant {tenant.name} has no repository {name!r}",
                               field="create_template")
    tenant.create_template = name


def set_tenant_quota(session: Session, principal: access.Principal, tenant: models.Tenant,
                     quota_bytes: int | None) -> None:
    """Only site admins set a tenant's quota (a tenant admin would raise its own)."""
    if not principal.is_site_admin:
        raise Forbidden("only site admins may set a tenant's quota_bytes")
    tenant.quota_bytes = base.validate_quota(quota_bytes)
    session.flush()
