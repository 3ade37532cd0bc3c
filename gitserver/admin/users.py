"""Users of a tenant: create, look up, change, disable.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.policy.errors import InvalidInput
from gitserver.policy.names import name_problem, validate_name


def get_user(session: Session, tenant: models.Tenant, name: str) -> models.User:
    return base.by_name(session, models.User, tenant, name, "user")


def find_user(session: Session, tenant: models.Tenant, name: str) -> models.User | None:
    if name_problem(name):
        return None
    return session.scalar(select(models.User).where(models.User.tenant_id == tenant.id,
                                                    models.User.name == name))


def validate_role(role: object) -> str:
    if role not in models.ROLES:
        raise InvalidInput(f"role must be one of {', '.join(models.ROLES)}", field="role")
    return role


def create_user(session: Session, tenant: models.Tenant, name: str,
                role: str = models.ROLE_MEMBER) -> models.User:
    validate_name(name, "name")
    validate_role(role)
    conflict = base.refuse_taken(session, models.User, tenant, name, "user")
    user = models.User(tenant_id=tenant.id, name=name, role=role, tenant=tenant)
    session.add(user)
    base.flush(session, conflict)
    return user


def users_query(tenant: models.Tenant) -> Select[Any]:
    return select(models.User).where(models.User.tenant_id == tenant.id)


def update_user(session: Session, user: models.User, *, role: str | None = None,
                disabled: bool | None = None) -> models.User:
    if role is not None:
        user.role = validate_role(role)
    if disabled is not None:
        user.disabled = bool(disabled)
    session.flush()
    return user


def disable_user(session: Session, user: models.User) -> models.User:
    """Disable a user. Nothing is deleted (pushes keep their author); the user's keys and
    tokens stop working at once because the SSH and API auth checks read ``disabled`` on
    every connection and request."""
    return update_user(session, user, disabled=True)
