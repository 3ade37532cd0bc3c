"""Which refs a backup holds: the ones the database snapshot records, never the live ones.

A push that lands while a backup runs is in the database snapshot with its ref updates, or it
is not in it at all; writing each repository's refs from the snapshot (and not from the refs on
disk, which may already be ahead) keeps that push either wholly in the backup or wholly out.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.git import refs as git_refs


@dataclasses.dataclass(frozen=True)
class RepoLedger:
    """One repository as the snapshot records it."""

    repo_id: int
    tenant: str
    name: str
    refs: dict[str, str]  # ref → object id: the last recorded update of each ref
    archives: list[tuple[str, str]]  # (tag short name, commit the tag peels to)


def read_ledger(session: Session) -> list[RepoLedger]:
    """Every repository of the snapshot with its recorded refs and archives, by name."""
    last = (select(models.Push.repo_id, models.RefUpdate.ref,
                   func.max(models.RefUpdate.id).label("last_id"))
            .join(models.Push, models.Push.id == models.RefUpdate.push_id)
            # A push's intent is recorded before its refs move: only done (or recovered)
            # pushes moved them.
            .where(models.Push.state.in_(models.LEDGER_STATES))
            .group_by(models.Push.repo_id, models.RefUpdate.ref)
            .subquery())
    refs: dict[int, dict[str, str]] = defaultdict(dict)
    rows = session.execute(select(last.c.repo_id, last.c.ref, models.RefUpdate.new)
                           .join(models.RefUpdate, models.RefUpdate.id == last.c.last_id))
    for repo_id, ref, new in rows:
        if not git_refs.is_zero(new):  # refs are never deleted; a zero would mean nothing to keep
            refs[repo_id][ref] = new
    archives: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for repo_id, tag, commit_id in session.execute(
            select(models.Archive.repo_id, models.Archive.tag, models.Archive.commit_id)
            .order_by(models.Archive.id)):
        archives[repo_id].append((tag, commit_id))
    repos = session.execute(select(models.Repository.id, models.Tenant.name, models.Repository.name)
                            .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
                            .order_by(models.Tenant.name, models.Repository.name))
    return [RepoLedger(repo_id, tenant, name, refs.get(repo_id, {}), archives.get(repo_id, []))
            for repo_id, tenant, name in repos]

