"""The push audit log of a repository, as the API lists it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from gitserver.db import models


def ref_candidates(ref: str) -> list[str]:
    """A ref filter matches the full name or a branch or tag short name (``main`` matches
    ``refs/heads/main`` and ``refs/tags/main``)."""
    if ref.startswith("refs/"):
        return [ref]
    return [ref, f"refs/heads/{ref}", f"refs/tags/{ref}"]


def pushes_query(repo: models.Repository, *, ref: str | None = None,
                 user: models.User | bool | None = None, state: str | None = None) -> Select[Any]:
    """The audit log of one repository: the ledger (done and recovered pushes) unless
    ``state`` names one state or is ``all``. ``user=False`` means "a user that does not
    exist": the filter then matches nothing (rather than being ignored)."""
    query = select(models.Push).where(models.Push.repo_id == repo.id)
    if state is None:
        query = query.where(models.Push.state.in_(models.LEDGER_STATES))
    elif state != "all":
        query = query.where(models.Push.state == state)
    if ref:
        query = query.where(models.Push.id.in_(
            select(models.RefUpdate.push_id).where(models.RefUpdate.ref.in_(ref_candidates(ref)))))
    if user is False:
        query = query.where(models.Push.id.is_(None))
    elif isinstance(user, models.User):
        query = query.where(models.Push.user_id == user.id)
    return query
