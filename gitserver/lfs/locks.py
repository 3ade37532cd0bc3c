"""git-lfs file locks (``docs/api/locking.md``): create, list, verify, unlock.

One lock per path and repository (a unique row, so two clients racing for one path get one
lock and one 409). The owner is the user who created it, shown by name; "ours" in a verify
answer means the caller holds it. Unlocking another's lock needs ``force`` and admin
permission on the repository.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.lfs import batch
from gitserver.policy import access
from gitserver.policy.errors import Conflict, Forbidden, InvalidInput, NotFound

MAX_PATH = 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The largest id a lock can have: the databases' 64-bit signed integer.
MAX_ID = 2**63 - 1


class LockExists(Conflict):
    """The path is locked already; the answer carries that lock."""

    def __init__(self, lock: models.LfsLock) -> None:
        super().__init__(f"'{lock.path}' is already locked by {lock.owner_name}")
        self.lock = lock


def owner_name(principal: access.Principal) -> str:
    if principal.user_name:
        return principal.user_name
    return f"deploy key {principal.key_fingerprint}" if principal.key_fingerprint else principal.kind.value


def is_ours(lock: models.LfsLock, principal: access.Principal) -> bool:
    if lock.owner_user_id is not None or principal.user_id is not None:
        return lock.owner_user_id == principal.user_id
    return lock.owner_name == owner_name(principal)


def lock_json(lock: models.LfsLock) -> dict[str, Any]:
    return {"id": str(lock.id), "path": lock.path,
            "locked_at": lock.locked_at.isoformat().replace("+00:00", "Z"),
            "owner": {"name": lock.owner_name}}


def check_path(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\x00" in path or "\n" in path:
        raise InvalidInput(f"path must be the file's path in the repository, 1 to {MAX_PATH} characters",
                           field="path")
    return path


def check_limit(limit: object) -> int:
    if limit is None or limit == "":
        return DEFAULT_LIMIT
    try:
        value = int(str(limit))
    except ValueError:
        raise InvalidInput(f"limit must be a number from 1 to {MAX_LIMIT}", field="limit") from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a number from 1 to {MAX_LIMIT}", field="limit")
    return value


def _lock_id(text: object, field: str = "id") -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text <= MAX_ID:  # a JSON number the database's integer cannot hold
            raise NotFound("no such lock")
        return text
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise NotFound("no such lock")
    return int(text)


def create(session: Session, principal: access.Principal, repo: models.Repository, path: object,
           ref: str | None = None) -> models.LfsLock:
    path = check_path(path)
    if ref is not None:  # the SSH protocol's refname=, which no JSON parser has bounded
        ref = batch.parse_ref({"name": ref})
    existing = _by_path(session, repo.id, path)
    if existing is not None:
        raise LockExists(existing)
    lock = models.LfsLock(repo_id=repo.id, path=path, ref_name=ref or "", owner_user_id=principal.user_id,
                          owner_name=owner_name(principal))
    try:
        with session.begin_nested():
            session.add(lock)
            session.flush()
    except IntegrityError:  # another client locked the path between the read and the insert
        raced = _by_path(session, repo.id, path)
        if raced is None:
            raise
        raise LockExists(raced) from None
    return lock


def _by_path(session: Session, repo_id: int, path: str) -> models.LfsLock | None:
    return session.scalars(select(models.LfsLock).where(models.LfsLock.repo_id == repo_id,
                                                        models.LfsLock.path == path)).one_or_none()


@dataclasses.dataclass(frozen=True)
class Page:
    locks: list[models.LfsLock]
    next_cursor: str | None


def listing(session: Session, repo: models.Repository, *, path: str | None = None, lock_id: str | None = None,
            cursor: str | None = None, limit: object = None) -> Page:
    """Locks by id, oldest first; ``cursor`` is the id to start at (from ``next_cursor``)."""
    n = check_limit(limit)
    query = select(models.LfsLock).where(models.LfsLock.repo_id == repo.id).order_by(models.LfsLock.id)
    if path:
        query = query.where(models.LfsLock.path == path)
    if lock_id:
        try:
            query = query.where(models.LfsLock.id == _lock_id(lock_id))
        except NotFound:
            return Page([], None)
    if cursor:
        try:
            query = query.where(models.LfsLock.id >= _lock_id(cursor))
        except NotFound:
            raise InvalidInput("cursor must be a next_cursor of an earlier answer", field="cursor") from None
    rows = list(session.scalars(query.limit(n + 1)))
    return Page(rows[:n], str(rows[n].id) if len(rows) > n else None)


def unlock(session: Session, principal: access.Principal, repo: models.Repository, lock_id: object,
           force: bool) -> models.LfsLock:
    lock = session.get(models.LfsLock, _lock_id(lock_id))
    if lock is None or lock.repo_id != repo.id:
        raise NotFound("no such lock")
    if not is_ours(lock, principal):
        if not force:
            raise Forbidden(f"'{lock.path}' is locked by {lock.owner_name}; only they may unlock it "
                            "(an admin of the repository may with force)")
        if not access.allows(session, principal, repo, access.ADMIN):
            raise Forbidden(f"'{lock.path}' is locked by {lock.owner_name}; forcing an unlock needs "
                            "admin permission on the repository")
    session.delete(lock)
    session.flush()
    return lock
