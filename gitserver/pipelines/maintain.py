"""``maintain`` jobs: repack a repository and write its bitmap and commit-graph
(gitserver.git.maintain; docs/maintenance.md).

A push's pipeline job calls :func:`queue_if_needed` for its repository: two directory
listings decide whether the repository has more packs or loose objects than
``maintenance_max_packs`` / ``maintenance_max_loose_objects`` allow, and a ``maintain`` job
is queued (to run ``maintenance_delay`` seconds later, so a burst of pushes is repacked once)
unless one for that repository is already queued or running. The worker runs
:func:`run_maintain_job`. ``gitserver maintain`` runs :func:`maintain_repo` by hand;
``POST …/repos/{r}/maintenance`` asks a worker to run one now through :func:`queue_now`.

Every maintenance run then refreshes the repository's bundle (gitserver.git.bundles), and a
push's pipeline job writes one through :func:`bundle_if_missing` when none exists yet, so a
repository has a bundle from its first push on and a fresh one after each repack.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.git import bundles
from gitserver.git import maintain as git_maintain
from gitserver.pipelines import jobs
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

KIND = jobs.JobKind.MAINTAIN


def thresholds(cfg: Config) -> git_maintain.Thresholds:
    return git_maintain.Thresholds(packs=cfg.maintenance_max_packs,
                                   loose=cfg.maintenance_max_loose_objects)


def payload_of(repo_id: int) -> str:
    """The stored payload of a repository's maintain job (one spelling, so it can be matched)."""
    return json.dumps({"repo_id": repo_id})


def pending_job(session: Session, repo_id: int) -> models.Job | None:
    """The repository's maintain job that is queued or running, if there is one."""
    return session.scalar(
        select(models.Job).where(models.Job.kind == KIND, models.Job.payload == payload_of(repo_id),
                                 models.Job.status.in_((models.QUEUED, models.RUNNING)))
        .order_by(models.Job.id).limit(1))


def enqueue(session: Session, repo_id: int, delay: float = 0.0) -> models.Job | None:
    """Queue a maintain job for the repository in the caller's transaction, to run after
    ``delay`` seconds, unless one is already queued or running (then None)."""
    job, created = _queue(session, repo_id, delay)
    return job if created else None


def queue_now(session: Session, repo_id: int) -> tuple[models.Job, bool]:
    """Ask for maintenance of the repository now, whatever its counts and whether automatic
    maintenance is enabled (an admin asked), in the caller's transaction. Returns the job and
    whether it is new: when one is already queued or running that one is returned (still one
    at a time per repository), and a queued one still waiting out ``maintenance_delay`` is
    made due at once."""
    job, created = _queue(session, repo_id, 0.0)
    now = utcnow()
    if not created and job.status == models.QUEUED and job.run_after > now:
        job.run_after = now
        session.flush()
        jobs.wake_workers(session)
    return job, created


def _queue(session: Session, repo_id: int, delay: float) -> tuple[models.Job, bool]:
    """The repository's pending maintain job, or a new one due in ``delay`` seconds (True)."""
    # Lock the repository's row first: on PostgreSQL two transactions (two pushes, or a push
    # and an admin's request) would otherwise both find nothing pending and both queue a job.
    # SQLite needs no lock (BEGIN IMMEDIATE already serialises writers); there the FOR UPDATE
    # is left out by SQLAlchemy.
    session.execute(select(models.Repository.id).where(models.Repository.id == repo_id).with_for_update())
    existing = pending_job(session, repo_id)
    if existing is not None:
        return existing, False
    job = jobs.enqueue(session, KIND, {"repo_id": repo_id}, run_after=utcnow() + dt.timedelta(seconds=delay))
    return job, True


def queue_if_needed(runtime: Runtime, repo_id: int) -> bool:
    """After a push: queue maintenance when the repository crossed a threshold. Returns
    whether a job was queued."""
    cfg = runtime.config
    if not cfg.maintenance_enabled:
        return False
    with transaction(runtime.sessions) as session:
        path = _repo_path(session, runtime, repo_id)
        if path is None or not path.is_dir():
            return False
        if not git_maintain.needs_maintenance(git_maintain.stats(path), thresholds(cfg)):
            return False
        job = enqueue(session, repo_id, cfg.maintenance_delay)
    if job is not None:
        log.info("repository %s: maintenance queued (job %s)", repo_id, job.id)
    return job is not None


def run_maintain_job(ctx: jobs.JobContext) -> None:
    """Handler of ``maintain`` jobs; a git failure fails the job with git's message."""
    repo_id = ctx.payload.get("repo_id")
    if not isinstance(repo_id, int) or isinstance(repo_id, bool):
        raise ValueError(f"maintain job {ctx.job_id}: payload has no repo_id")
    with transaction(ctx.runtime.sessions) as session:
        path = _repo_path(session, ctx.runtime, repo_id)
    if path is None or not path.is_dir():
        log.info("maintain job %s: repository %s is gone; nothing to do", ctx.job_id, repo_id)
        return
    ctx.check_cancelled()
    maintain_repo(path, ctx.runtime.config, label=f"repository {repo_id}")


def maintain_repo(path: Path, cfg: Config, *, label: str) -> git_maintain.Stats | None:
    """Maintain one repository now; None when another run holds it (that run does the work).
    Raises :class:`gitserver.git.maintain.MaintenanceError` when git fails."""
    before = git_maintain.stats(path)
    started = time.monotonic()
    try:
        after = git_maintain.maintain(path, cfg.maintenance_timeout)
    except git_maintain.Busy:
        log.info("%s: maintenance already running elsewhere; skipped", label)
        return None
    log.info("%s: maintained in %.1f s: packs %d -> %d, loose objects %d -> %d, bitmap %s, "
             "commit-graph %s", label, time.monotonic() - started, before.packs, after.packs,
             before.loose, after.loose, after.bitmap, after.commit_graph)
    refresh_bundle(path, cfg, label=label)
    return after


def refresh_bundle(path: Path, cfg: Config, *, label: str) -> None:
    """Write the repository's bundle anew (after a repack it is read from the new pack). A
    failure is logged, not raised: the repository is maintained, and the old bundle stays."""
    started = time.monotonic()
    try:
        written = bundles.write_bundle(path, _bundle_of(path, cfg), cfg.maintenance_timeout)
    except (bundles.BundleError, OSError) as exc:
        log.error("%s: writing its bundle failed: %s", label, exc)
        return
    if written:
        log.info("%s: bundle written in %.1f s", label, time.monotonic() - started)


def bundle_if_missing(runtime: Runtime, repo_id: int) -> bool:
    """After a push: write the repository's first bundle when it has none. Returns whether
    one was written."""
    with transaction(runtime.sessions) as session:
        path = _repo_path(session, runtime, repo_id)
    if path is None or not path.is_dir() or _bundle_of(path, runtime.config).exists():
        return False
    return bundles.write_bundle(path, _bundle_of(path, runtime.config), runtime.config.maintenance_timeout)


def _bundle_of(path: Path, cfg: Config) -> Path:
    """The bundle of the repository at ``<repos>/<tenant>/<repo>.git``."""
    return bundles.bundle_path(cfg.bundles_dir, path.parent.name, path.name.removesuffix(".git"))


def _repo_path(session: Session, runtime: Runtime, repo_id: int) -> Path | None:
    row = session.execute(
        select(models.Tenant.name, models.Repository.name)
        .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
        .where(models.Repository.id == repo_id)).first()
    return None if row is None else runtime.store.path(row[0], row[1])
