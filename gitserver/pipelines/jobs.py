"""The durable job queue: rows of the ``jobs`` table, claimed, leased, finished.

This module is the contract other modules code against (see the handler table below): a
handler is a function ``(JobContext) -> None`` registered under a job ``kind``; the worker
(:mod:`gitserver.pipelines.worker`) claims a job, calls its handler while heartbeating the
lease, and records the outcome:

* the handler returns → ``succeeded``;
* it raises :class:`RetryLater` → back to ``queued`` with ``run_after = now + delay`` (``failed``
  after ``max_attempts``, default 8, or the payload's ``"max_attempts"``);
* it raises :class:`JobCancelled` → ``cancelled``;
* it raises :class:`JobReleased` (this worker is shutting down) → ``queued`` again, lease
  cleared, so another worker takes it at once;
* anything else → ``failed``, the message in ``Job.last_error``.

Claiming is one statement, ``UPDATE jobs … WHERE id IN (SELECT id … ORDER BY run_after, id
LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING …``: a queued job whose time has come, or a running
job whose lease expired (its worker died). Every later write is guarded by the lease owner, so
a worker that lost its lease can never overwrite the state written by the one that took over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.pipelines import logstore

if TYPE_CHECKING:
    from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
# PostgreSQL LISTEN/NOTIFY channel that wakes idle workers when a job is queued.
WAKE_CHANNEL = "gitserver_jobs"
# Largest piece of log text stored in one LogChunk row; bigger writes are split.
MAX_LOG_CHUNK = 64 * 1024
# Most bytes one pipeline's log keeps. Build steps come from pushed content: without a cap a
# step printing without end fills the database until its timeout. Past it, one marker line.
MAX_LOG_BYTES = 64 * 1024 * 1024
LOG_TRUNCATED = b"\n*** log truncated: it reached the size limit; later output is discarded\n"
# A running log is held to its repository's and tenant's quotas (gitserver.pipelines.logstore):
# measured at its first write and again after every this many bytes, not at every write.
QUOTA_RECHECK_BYTES = 1024 * 1024


class RetryLater(Exception):
    """Raised by a handler to be run again after ``delay`` seconds."""

    def __init__(self, delay: float, message: str) -> None:
        super().__init__(message)
        self.delay = max(0.0, float(delay))
        self.message = message


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled` once a cancel was requested."""


class JobReleased(Exception):
    """Raised by :meth:`JobContext.check_released` when this worker is shutting down: the job
    goes back to the queue (lease cleared) for another worker to run from the start."""


@dataclasses.dataclass
class JobContext:
    """What a handler gets: the runtime, the job's identity and payload, and ways to learn
    about cancellation and to write the pipeline log."""

    runtime: Runtime
    job_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    pipeline_id: int | None
    # Set by the worker's monitor thread, which polls the database for every running job.
    # Without a monitor (a handler called directly), cancelled() asks the database itself.
    cancel_event: threading.Event | None = None
    release_event: threading.Event = dataclasses.field(default_factory=threading.Event)
    _log_offset: int | None = dataclasses.field(default=None, repr=False)
    _log_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _log_cut: bool = dataclasses.field(default=False, repr=False)
    _quota: logstore.QuotaRoom | None = dataclasses.field(default=None, repr=False)
    _quota_measured_at: int | None = dataclasses.field(default=None, repr=False)

    def cancelled(self) -> bool:
        """True once a cancel of this job or of its pipeline was requested (any replica)."""
        if self.cancel_event is not None:
            return self.cancel_event.is_set()
        with transaction(self.runtime.sessions) as session:
            return bool(cancel_requested(session, [self.job_id]))

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def released(self) -> bool:
        """True when the worker is shutting down and wants this job back in the queue."""
        return self.release_event.is_set()

    def check_released(self) -> None:
        if self.released():
            raise JobReleased(f"job {self.job_id} released: the worker is shutting down")

    def log(self, data: bytes | str) -> None:
        """Append ``data`` to the pipeline's log (no-op for jobs without a pipeline)."""
        if self.pipeline_id is None or not data:
            return
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
        with self._log_lock, transaction(self.runtime.sessions) as session:
            if self._log_offset is None:
                self._log_offset = log_end(session, self.pipeline_id)
            room = MAX_LOG_BYTES - self._log_offset
            if room <= 0 or self._log_cut:
                return
            if len(raw) > room:
                raw = raw[:room] + LOG_TRUNCATED
            raw = self._within_quota(session, raw)
            for start in range(0, len(raw), MAX_LOG_CHUNK):
                piece = raw[start:start + MAX_LOG_CHUNK]
                session.add(models.LogChunk(pipeline_id=self.pipeline_id, offset=self._log_offset,
                                            data=piece))
                self._log_offset += len(piece)

    def _within_quota(self, session: Session, raw: bytes) -> bytes:
        """``raw``, or the part of it the quotas leave room for and the line saying the log was
        cut there (nothing is written after it)."""
        assert self.pipeline_id is not None and self._log_offset is not None
        if self._quota_measured_at is None or self._log_offset - self._quota_measured_at >= QUOTA_RECHECK_BYTES:
            self._quota = logstore.quota_room(session, self.runtime.store, self.pipeline_id)
            self._quota_measured_at = self._log_offset
        if self._quota is None:
            return raw
        room = self._quota.room - (self._log_offset - self._quota_measured_at)
        if len(raw) <= room:
            return raw
        self._log_cut = True
        return raw[:max(0, room)] + self._quota.cut_line


Handler = Callable[[JobContext], None]



class JobKind(enum.StrEnum):
    """The job kinds; the worker maps each to its handler (gitserver.pipelines.worker.job_handlers).
    A StrEnum, so ``Job.kind`` stores (and the API shows) the plain string."""

    PIPELINE = "pipeline"  # a push's or a create's pipeline (gitserver.pipelines.push)
    WEBHOOK = "webhook"  # one delivery of a webhook (gitserver.pipelines.deliver)
    CALLBACK = "callback"  # one delivery of a Repour callback, with fresh credentials
    REPOUR = "repour"  # a Repour clone or adjust (gitserver.repour.job)
    MAINTAIN = "maintain"  # repacking one repository (gitserver.pipelines.maintain)


KINDS = tuple(JobKind)


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, pipeline_id: int | None = None,
            run_after: dt.datetime | None = None) -> models.Job:
    """Add a queued job in the caller's transaction (flushed, never committed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    job = models.Job(kind=kind, pipeline_id=pipeline_id, payload=json.dumps(payload),
                     status=models.QUEUED, run_after=run_after or utcnow())
    session.add(job)
    session.flush()
    wake_workers(session)
    return job


def hold(session: Session, kind: str, payload: dict[str, Any], owner: str, lease_seconds: float, *,
         pipeline_id: int | None = None) -> Claim:
    """Add a job that ``owner`` already holds (running, leased, first attempt), in the caller's
    transaction (flushed, never committed): for work a process runs itself, such as a
    synchronous API request, that must still be taken over by a worker if that process dies.

    The holder renews the lease (:func:`renew`) and records the end (:func:`finish`) like a
    worker; once the lease expires, :func:`claim` hands the job to a worker like any other.
    No worker is woken: there is nothing for them to do until the lease runs out.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    now = utcnow()
    job = models.Job(kind=kind, pipeline_id=pipeline_id, payload=json.dumps(payload),
                     status=models.RUNNING, attempts=1, run_after=now, lease_owner=owner,
                     lease_expires_at=now + dt.timedelta(seconds=lease_seconds), updated_at=now)
    session.add(job)
    session.flush()
    return Claim(job_id=job.id, kind=kind, payload=dict(payload), attempts=1, pipeline_id=pipeline_id,
                 owner=owner)


def wake_workers(session: Session) -> None:
    """On PostgreSQL, tell idle workers (any replica) that there is work: the notification
    is delivered when the caller commits, so they claim it at once instead of at their next
    poll. Elsewhere a no-op; workers poll every ``job_poll_interval``."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {WAKE_CHANNEL}"))


# --- claiming and finishing (used by the worker) ----------------------------------------------

@dataclasses.dataclass(frozen=True)
class Claim:
    """A job this worker holds: what the claim statement returned."""

    job_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    pipeline_id: int | None
    owner: str


def claim(session: Session, owner: str, lease_seconds: float,
          kinds: Iterable[str] | None = None, now: dt.datetime | None = None) -> Claim | None:
    """Claim one runnable job for ``owner`` (the caller commits at once), or None.

    Runnable: queued with ``run_after`` past, or running with an expired lease (its worker is
    gone). PostgreSQL locks the candidate row with SKIP LOCKED so concurrent claimers pick
    different rows; SQLite serialises writers (BEGIN IMMEDIATE), which gives the same result.
    """
    now = now or utcnow()
    kinds = list(KINDS if kinds is None else kinds)
    candidate = (
        select(models.Job.id)
        .where(models.Job.kind.in_(kinds),
               or_(and_(models.Job.status == models.QUEUED, models.Job.run_after <= now),
                   and_(models.Job.status == models.RUNNING, models.Job.lease_expires_at < now)))
        .order_by(models.Job.run_after, models.Job.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    stmt = (
        update(models.Job)
        .where(models.Job.id.in_(candidate.scalar_subquery()))
        .values(status=models.RUNNING, lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                attempts=models.Job.attempts + 1, updated_at=now)
        .returning(models.Job.id, models.Job.kind, models.Job.payload, models.Job.attempts,
                   models.Job.pipeline_id)
        .execution_options(synchronize_session=False)
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    try:
        payload = json.loads(row.payload or "{}")
    except ValueError:
        payload = {"_invalid_payload": row.payload}
    if not isinstance(payload, dict):
        payload = {"_invalid_payload": row.payload}
    return Claim(job_id=row.id, kind=row.kind, payload=payload, attempts=row.attempts,
                 pipeline_id=row.pipeline_id, owner=owner)


def _owned(c: Claim) -> Any:
    return and_(models.Job.id == c.job_id, models.Job.lease_owner == c.owner,
                models.Job.status == models.RUNNING)


def renew(session: Session, claims: Iterable[Claim], lease_seconds: float,
          now: dt.datetime | None = None) -> set[int]:
    """Extend the leases of ``claims``; returns the ids whose lease this worker still holds."""
    now = now or utcnow()
    kept = set()
    for c in claims:
        result = session.execute(
            update(models.Job).where(_owned(c))
            .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds), updated_at=now)
            .execution_options(synchronize_session=False))
        if rowcount(result):
            kept.add(c.job_id)
    return kept


def cancel_requested(session: Session, job_ids: Iterable[int]) -> set[int]:
    """The ids among ``job_ids`` whose job, or whose job's pipeline, was cancelled."""
    ids = list(job_ids)
    if not ids:
        return set()
    stmt = (
        select(models.Job.id)
        .outerjoin(models.Pipeline, models.Pipeline.id == models.Job.pipeline_id)
        .where(models.Job.id.in_(ids),
               or_(models.Job.cancel_requested.is_(True),
                   models.Job.status == models.CANCELLED,
                   models.Pipeline.status == models.CANCELLED))
    )
    return set(session.scalars(stmt))


def finish(session: Session, c: Claim, status: str, error: str = "") -> bool:
    """Record a final state; False when the lease was lost (another worker owns the job)."""
    if status not in models.FINAL_STATES:
        raise ValueError(f"not a final state: {status!r}")
    result = session.execute(
        update(models.Job).where(_owned(c))
        .values(status=status, lease_owner=None, lease_expires_at=None, last_error=error[:4000],
                updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return bool(rowcount(result))


def retry(session: Session, c: Claim, delay: float, error: str) -> str:
    """Re-queue after ``delay`` seconds, or fail after the last attempt; returns the new state."""
    limit = c.payload.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = DEFAULT_MAX_ATTEMPTS
    if c.attempts >= limit:
        finish(session, c, models.FAILED, f"gave up after {c.attempts} attempts: {error}")
        return models.FAILED
    now = utcnow()
    session.execute(
        update(models.Job).where(_owned(c))
        .values(status=models.QUEUED, lease_owner=None, lease_expires_at=None,
                run_after=now + dt.timedelta(seconds=delay), last_error=error[:4000], updated_at=now)
        .execution_options(synchronize_session=False))
    return models.QUEUED


def release(session: Session, c: Claim) -> bool:
    """Give the job back to the queue at once (graceful shutdown); the interrupted attempt is
    not counted, and its running pipeline shows as queued again. False when the lease was
    already lost (then the job and pipeline belong to another worker and are left alone)."""
    result = session.execute(
        update(models.Job).where(_owned(c))
        .values(status=models.QUEUED, lease_owner=None, lease_expires_at=None,
                # claim() counted this attempt (attempts >= 1 while running); undo that.
                attempts=models.Job.attempts - 1,
                run_after=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False))
    if rowcount(result) and c.pipeline_id is not None:
        session.execute(
            update(models.Pipeline)
            .where(models.Pipeline.id == c.pipeline_id, models.Pipeline.status == models.RUNNING)
            .values(status=models.QUEUED)
            .execution_options(synchronize_session=False))
    if rowcount(result):
        wake_workers(session)
    return bool(rowcount(result))


# --- pipeline-level helpers ------------------------------------------------------------------

def request_cancel(session: Session, pipeline: models.Pipeline) -> bool:
    """Cancel ``pipeline`` (any replica's worker honours it within about a second).

    A pipeline still queued is cancelled here and now; a running one gets ``cancel_requested``
    on its jobs and its worker kills the running step. Returns False when it had already
    finished (nothing to cancel).
    """
    if pipeline.status in models.FINAL_STATES:
        return False
    now = utcnow()
    session.execute(
        update(models.Job)
        .where(models.Job.pipeline_id == pipeline.id, models.Job.status.in_((models.QUEUED, models.RUNNING)))
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False))
    # Jobs nobody holds are finished now; a running one is finished by its worker.
    session.execute(
        update(models.Job)
        .where(models.Job.pipeline_id == pipeline.id, models.Job.status == models.QUEUED)
        .values(status=models.CANCELLED, last_error="cancelled before it ran", updated_at=now)
        .execution_options(synchronize_session=False))
    held = session.scalar(select(func.count(models.Job.id)).where(
        models.Job.pipeline_id == pipeline.id, models.Job.status == models.RUNNING))
    if not held:
        # No worker runs it (queued, or released by a worker that shut down): cancel it here.
        pipeline.status = models.CANCELLED
        pipeline.finished_at = now
        pipeline.error = "cancelled before it ran"
        for step in pipeline.steps:
            if step.status in (models.QUEUED, models.RUNNING):
                step.status = models.CANCELLED
                step.finished_at = now
    session.flush()
    return True


def log_end(session: Session, pipeline_id: int) -> int:
    """The byte length of a pipeline's log (where the next chunk goes)."""
    row = session.execute(
        select(models.LogChunk.offset, func.length(models.LogChunk.data))
        .where(models.LogChunk.pipeline_id == pipeline_id)
        .order_by(models.LogChunk.offset.desc()).limit(1)).first()
    return 0 if row is None else int(row[0]) + int(row[1])


def read_log(session: Session, pipeline_id: int, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
    """Log bytes from ``offset`` (at most about ``limit``), and the offset to ask for next."""
    if offset < 0:
        raise ValueError("offset must not be negative")
    # Only the chunks that start inside the window are loaded: the log is unbounded and
    # readable anonymously for public repositories, so "everything after offset" would let
    # any caller make this process hold a whole multi-gigabyte log to send 1 MiB of it.
    chunks = session.execute(
        select(models.LogChunk.offset, models.LogChunk.data)
        .where(models.LogChunk.pipeline_id == pipeline_id,
               models.LogChunk.offset + func.length(models.LogChunk.data) > offset,
               models.LogChunk.offset < offset + limit)
        .order_by(models.LogChunk.offset)).all()
    out = bytearray()
    position = offset
    for start, data in chunks:
        if start > position:  # never happens with one writer; stop rather than invent bytes
            break
        piece = bytes(data)[position - start:]
        out += piece
        position += len(piece)
        if len(out) >= limit:
            break
    return bytes(out), position
