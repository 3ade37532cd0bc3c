"""Pipeline logs as stored data: their bytes in the quotas, and their retention.

Logs live in the database (``log_chunks``), not under the repository directory, so the disk
walk of :mod:`gitserver.push.limits` never saw them: a writer with builds enabled could fill the
database with logs of up to :data:`gitserver.pipelines.jobs.MAX_LOG_BYTES` each, kept for ever.
Here a repository's (and a tenant's) stored log bytes are summed, to be counted with its bytes
on disk wherever a quota is checked or shown (docs/limits.md), and the logs of pipelines that
ended more than ``pipeline_log_retention_days`` ago are deleted by the worker
(docs/pipelines.md, "Log retention"); the pipeline and its steps stay.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, object_session, sessionmaker

from gitserver.db import batches, models
from gitserver.db.base import utcnow
from gitserver.lfs import usage as lfs_usage
from gitserver.push import limits

if TYPE_CHECKING:
    from gitserver.git.store import RepoStore

log = logging.getLogger(__name__)

# Pipelines whose logs one transaction deletes: a pass never holds a long transaction, and
# a worker's monitor is never busy for long (PRUNE_MAX_BATCHES bounds one pass).
PRUNE_BATCH = 50
PRUNE_MAX_BATCHES = 20
# The setting a pruned log's answer names.
RETENTION_SETTING = "pipeline_log_retention_days"


def repo_log_bytes(session: Session, repo_id: int) -> int:
    """The bytes of every stored log of the repository's pipelines (a sum over one column;
    ``length`` of a blob reads its header, not its data, on both databases)."""
    total = session.scalar(
        select(func.coalesce(func.sum(func.length(models.LogChunk.data)), 0))
        .join(models.Pipeline, models.Pipeline.id == models.LogChunk.pipeline_id)
        .where(models.Pipeline.repo_id == repo_id))
    return int(total or 0)


def tenant_log_bytes(session: Session, tenant_id: int) -> int:
    """The bytes of every stored log of the pipelines of the tenant's repositories."""
    total = session.scalar(
        select(func.coalesce(func.sum(func.length(models.LogChunk.data)), 0))
        .join(models.Pipeline, models.Pipeline.id == models.LogChunk.pipeline_id)
        .join(models.Repository, models.Repository.id == models.Pipeline.repo_id)
        .where(models.Repository.tenant_id == tenant_id))
    return int(total or 0)


def repo_held_bytes(session: Session, repo_id: int) -> int:
    """What the repository holds outside its directory: its logs and its LFS objects
    (gitserver.lfs.usage), both counted in its quota."""
    return repo_log_bytes(session, repo_id) + lfs_usage.repo_bytes(session, repo_id)


def tenant_held_bytes(session: Session, tenant_id: int) -> int:
    """The same for every repository of the tenant."""
    return tenant_log_bytes(session, tenant_id) + lfs_usage.tenant_bytes(session, tenant_id)


def stored_bytes(repo: models.Repository) -> int:
    """The repository's log and LFS bytes, asked through the session ``repo`` was loaded in (0
    for a detached row: nothing to ask)."""
    session = object_session(repo)
    return 0 if session is None else repo_held_bytes(session, repo.id)


def tenant_stored_bytes(tenant: models.Tenant) -> int:
    """The log and LFS bytes of the tenant's repositories (see :func:`stored_bytes`)."""
    session = object_session(tenant)
    return 0 if session is None else tenant_held_bytes(session, tenant.id)


def held_bytes(session: Session, repo: models.Repository) -> tuple[int, int]:
    """The repository's and its tenant's log and LFS bytes, each summed only when that quota
    is set (what a push's check needs, :func:`gitserver.push.launcher.push_limits`)."""
    return (repo_held_bytes(session, repo.id) if repo.quota_bytes else 0,
            tenant_held_bytes(session, repo.tenant_id) if repo.tenant.quota_bytes else 0)


class QuotaRoom(NamedTuple):
    """How many more bytes a pipeline's log may take before its repository or tenant is over
    its quota (negative: over already), and the line that ends a log cut there."""

    room: int
    cut_line: bytes


def quota_room(session: Session, store: RepoStore, pipeline_id: int) -> QuotaRoom | None:
    """The tightest of the repository's and tenant's quotas for the pipeline's log, measured
    as the push check measures (disk and stored logs); None when neither has a quota."""
    repo = session.scalars(
        select(models.Repository).join(models.Pipeline, models.Pipeline.repo_id == models.Repository.id)
        .where(models.Pipeline.id == pipeline_id)).one_or_none()
    if repo is None:
        return None
    rooms = []
    if repo.quota_bytes:
        used = limits.disk_usage(store.path(repo.tenant.name, repo.name)) + repo_held_bytes(session, repo.id)
        rooms.append(QuotaRoom(repo.quota_bytes - used, _cut_line("repository", repo.quota_bytes)))
    if repo.tenant.quota_bytes:
        used = limits.tenant_usage(store.root / repo.tenant.name) + tenant_held_bytes(session, repo.tenant_id)
        rooms.append(QuotaRoom(repo.tenant.quota_bytes - used, _cut_line("tenant", repo.tenant.quota_bytes)))
    return min(rooms) if rooms else None


def _cut_line(owner: str, quota: int) -> bytes:
    return f"\n*** log cut: {owner} over its quota ({quota} bytes); later output is discarded\n".encode()


def prune_batch(session: Session, before: dt.datetime, now: dt.datetime) -> int:
    """Delete the logs of at most :data:`PRUNE_BATCH` pipelines that ended before ``before``
    and mark them pruned; the number of pipelines pruned."""
    ids = list(session.scalars(
        select(models.Pipeline.id)
        .where(models.Pipeline.finished_at.is_not(None), models.Pipeline.finished_at < before,
               models.Pipeline.log_pruned_at.is_(None))
        .order_by(models.Pipeline.finished_at, models.Pipeline.id).limit(PRUNE_BATCH)))
    if not ids:
        return 0
    session.execute(delete(models.LogChunk).where(models.LogChunk.pipeline_id.in_(ids)))
    session.execute(update(models.Pipeline).where(models.Pipeline.id.in_(ids))
                    .values(log_pruned_at=now))
    return len(ids)


def prune(sessions: sessionmaker[Session], retention_days: int, now: dt.datetime | None = None) -> int:
    """One retention pass (the worker's monitor runs it): the number of pipelines whose logs
    were deleted. ``retention_days`` 0 keeps every log."""
    if retention_days <= 0:
        return 0
    now = now or utcnow()
    before = now - dt.timedelta(days=retention_days)
    pruned = batches.in_batches(sessions, lambda session: prune_batch(session, before, now), PRUNE_BATCH,
                                PRUNE_MAX_BATCHES)
    if pruned:
        log.info("pruned the logs of %d pipelines that ended before %s", pruned, before.isoformat())
    return pruned
