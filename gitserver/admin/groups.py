"""Groups of a tenant and their members.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.policy.errors import NotFound
from gitserver.policy.names import validate_name


def get_group(session: Session, tenant: models.Tenant, name: str) -> models.Group:
    return base.by_name(session, models.Group, tenant, name, "group")


def create_group(session: Session, tenant: models.Tenant, name: str, description: str = "") -> models.Group:
    validate_name(name, "name")
    conflict = base.refuse_taken(session, models.Group, tenant, name, "group")
    group = models.Group(tenant_id=tenant.id, name=name, description=description, tenant=tenant)
    return base.add(session, group, conflict)


def add_member(session: Session, group: models.Group, user: models.User) -> None:
    if user.tenant_id != group.tenant_id:
        raise NotFound(f"user {user.name!r} not found in tenant {group.tenant.name}")
    if session.get(models.GroupMember, (group.id, user.id)) is None:
        session.add(models.GroupMember(group_id=group.id, user_id=user.id))
        base.flush(session, f"user {user.name!r} was added to group {group.name!r} concurrently")


def remove_member(session: Session, group: models.Group, user: models.User) -> None:
    member = session.get(models.GroupMember, (group.id, user.id))
    if member is None:
        raise NotFound(f"user {user.name!r} is not a member of group {group.name!r}")
    base.delete(session, member)


def members_query(group: models.Group) -> Select[Any]:
    return (select(models.User)
            .join(models.GroupMember, models.GroupMember.user_id == models.User.id)
            .where(models.GroupMember.group_id == group.id))


def groups_query(tenant: models.Tenant) -> Select[Any]:
    return select(models.Group).where(models.Group.tenant_id == tenant.id)


def update_group(session: Session, group: models.Group, *, description: str | None = None) -> models.Group:
    if description is not None:
        group.description = description
    session.flush()
    return group


def delete_group(session: Session, group: models.Group) -> None:
    """Delete a group with its memberships and the grants it held (members lose what the group
    gave them at their next connection)."""
    session.execute(delete(models.GroupMember).where(models.GroupMember.group_id == group.id))
    session.execute(delete(models.Grant).where(models.Grant.group_id == group.id))
    base.delete(session, group)
