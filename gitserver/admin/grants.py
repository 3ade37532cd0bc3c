"""Grants: a user's or a group's read, write or admin permission on one repository.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.policy.errors import InvalidInput, NotFound


def validate_permission(permission: object) -> str:
    if permission not in models.PERMISSIONS:
        raise InvalidInput(f"permission must be one of {', '.join(models.PERMISSIONS)}",
                           field="permission")
    return permission


def _grantee(user: models.User | None, group: models.Group | None) -> ColumnElement[bool]:
    """The WHERE clause that picks the grants of ``user``, else of ``group``."""
    if user is not None:
        return models.Grant.user_id == user.id
    if group is not None:
        return models.Grant.group_id == group.id
    raise ValueError("a grant needs a user or a group")


def set_grant(session: Session, repo: models.Repository, permission: str, *,
              user: models.User | None = None, group: models.Group | None = None) -> models.Grant:
    validate_permission(permission)
    grantee = user or group
    if grantee is None:
        raise ValueError("a grant needs a user or a group")
    grantee_tenant = grantee.tenant_id
    if grantee_tenant != repo.tenant_id:
        raise InvalidInput("grants can only be given to users and groups of the repository's tenant")
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        grant = models.Grant(repo_id=repo.id, user_id=user.id if user else None,
                             group_id=group.id if group else None, permission=permission)
        session.add(grant)
    else:
        grant.permission = permission
    # Two writers creating the same grant at once: one wins, the other gets a 409, not a 500.
    base.flush(session, "the grant was changed concurrently; retry")
    return grant


def get_grant(session: Session, repo: models.Repository, *, user: models.User | None = None,
              group: models.Group | None = None) -> models.Grant:
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        raise NotFound("no such grant")
    return grant


def remove_grant(session: Session, repo: models.Repository, *, user: models.User | None = None,
                 group: models.Group | None = None) -> None:
    query = select(models.Grant).where(models.Grant.repo_id == repo.id, _grantee(user, group))
    grant = session.scalar(query)
    if grant is None:
        raise NotFound("no such grant")
    base.delete(session, grant)


def grants_query(repo: models.Repository) -> Select[Any]:
    return select(models.Grant).where(models.Grant.repo_id == repo.id)
