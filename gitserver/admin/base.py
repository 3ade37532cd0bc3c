"""What the domains of :mod:`gitserver.admin` share: an add and flush that turns a
unique-constraint race into a 409, a delete flushed at once, the lookup of one row among
someone's, the lookup of a user or group by name, and the validators of fields more than one
domain has (descriptions, disk quotas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.policy.errors import Conflict, InvalidInput, NotFound
from gitserver.policy.names import name_problem


def flush(session: Session, conflict: str) -> None:
    """Flush, turning a unique-constraint race into a 409 naming the conflict."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


_InTenant = TypeVar("_InTenant", models.User, models.Group)


def by_name(session: Session, model: type[_InTenant], tenant: models.Tenant, name: str,
            what: str) -> _InTenant:
    """The user or group ``name`` of ``tenant``, or NotFound (a name that could never exist is
    not looked up)."""
    row = None if name_problem(name) else session.scalar(
        select(model).where(model.tenant_id == tenant.id, model.name == name))
    if row is None:
        raise NotFound(f"{what} {tenant.name}/{name[:100]} not found")
    return row


def refuse_taken(session: Session, model: type[_InTenant], tenant: models.Tenant, name: str,
                 what: str) -> str:
    """Refuse (409) a new user or group whose name ``tenant`` already has; the same words are
    returned for the :func:`flush` that catches a concurrent one."""
    conflict = f"{what} {tenant.name}/{name} already exists"
    if session.scalar(select(model.id).where(model.tenant_id == tenant.id, model.name == name)) is not None:
        raise Conflict(conflict)
    return conflict


_Row = TypeVar("_Row")


def add(session: Session, row: _Row, conflict: str) -> _Row:
    """Add ``row`` and :func:`flush` it (a unique-constraint race is a 409 naming ``conflict``)."""
    session.add(row)
    flush(session, conflict)
    return row


def delete(session: Session, row: object) -> None:
    """Delete ``row`` and flush, so that what the transaction does next sees it gone."""
    session.delete(row)
    session.flush()


def one_of(session: Session, rows: Select[_Row], row_id: int, missing: str) -> _Row:
    """The row ``row_id`` among ``rows`` (a user's keys, a tenant's CAs), else NotFound with
    ``missing``: an id of someone else's row looks like a missing one."""
    row = session.scalar(rows.filter_by(id=row_id))
    if row is None:
        raise NotFound(missing)
    return row


_Owner = TypeVar("_Owner", models.User, models.Repository, models.Tenant)


@dataclasses.dataclass(frozen=True)
class Owned(Generic[_Owner, _Row]):
    """The rows of ``model`` that belong to one owner through the foreign key ``owner_key``
    (a user's keys, a repository's deploy keys, a tenant's CAs); ``missing`` says whose, for
    the NotFound of an id that is not among them."""

    model: type[_Row]
    owner_key: str
    missing: Callable[[_Owner, int], str]

    def query(self, owner: _Owner) -> Select[_Row]:
        return select(self.model).filter_by(**{self.owner_key: owner.id})

    def get(self, session: Session, owner: _Owner, row_id: int) -> _Row:
        return one_of(session, self.query(owner), row_id, self.missing(owner, row_id))


def validate_description(description: object, field: str = "description") -> str:
    if not isinstance(description, str) or len(description) > 2000:
        raise InvalidInput("description must be a string of at most 2000 characters", field=field)
    return description


# The largest quota accepted: a BIGINT column, and far beyond any disk.
MAX_QUOTA_BYTES = 2**62


def validate_quota(value: object, field: str = "quota_bytes") -> int | None:
    """A disk quota in bytes: a positive integer, or null for none (docs/limits.md)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_QUOTA_BYTES:
        raise InvalidInput(f"{field} must be a positive number of bytes (at most {MAX_QUOTA_BYTES}) "
                           "or null for no quota", field=field)
    return value
