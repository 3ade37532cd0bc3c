"""Synchronous /clone and /adjust: the operation runs inside the request, under a job lease
the API process holds (:class:`InlineLease`), so its pipeline never outlives the process: if
the process dies, a worker takes the job over and ends the pipeline (:func:`take_over_inline`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.pipelines import jobs
from gitserver.process.background import Background
from gitserver.repour.command import ProcessingError
from gitserver.repour.gitwork import Actor
from gitserver.repour.operations import Operation, execute
from gitserver.repour.records import finish_pipeline
from gitserver.repour.results import cancelled_body, described_error_body
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

# How often an inline (synchronous) run asks the database whether it was cancelled.
INLINE_CANCEL_POLL = 1.0
# The payload "mode" of the job a synchronous request's API process holds (see InlineLease).
INLINE_MODE = "inline"
# Exit code of the error bodies of interrupted synchronous runs: EX_TEMPFAIL, try again.
LEASE_LOST_EXIT_CODE = 75
INTERRUPTED_DESC = ("the API process running this synchronous request stopped before it finished "
                    "(its lease expired); nothing is waiting for the result: send the request again "
                    "(clone and adjust are idempotent)")


class InlineLease(Background):
    """The lease of a synchronous run, held by this API process like a worker holds a job's.

    A synchronous /clone or /adjust runs inside the request, but its Pipeline row must not
    outlive the process: the request's ``repour`` job (see :func:`hold_inline`) is claimed by
    this process, and a heartbeat thread renews its lease while the operation runs. If the
    process dies, the lease expires and a worker's ordinary claim takes the job over
    (:func:`take_over_inline`), which ends the pipeline.

    The same thread polls for a cancel (``/cancel/{task_id}`` or the pipelines API, from any
    replica) about once a second. The operation's stop check (the instance, called) then
    raises :class:`~gitserver.pipelines.jobs.JobCancelled`, or
    :class:`~gitserver.pipelines.jobs.JobReleased` when the lease was lost (this process stalled
    past it and a worker took the job over: the worker owns the pipeline from then on).
    """

    def __init__(self, sessions: sessionmaker[Session], claim: jobs.Claim, lease_seconds: float,
                 poll: float = INLINE_CANCEL_POLL) -> None:
        self.sessions = sessions
        self.claim = claim
        self.lease_seconds = lease_seconds
        # Renew three times per lease (a missed renewal or two is survived); poll at least as often.
        self.renew_every = max(0.2, lease_seconds / 3)
        self.poll = min(poll, self.renew_every)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        super().__init__(f"repour-lease-{claim.job_id}")

    def __call__(self) -> None:
        if self.lost.is_set():
            raise jobs.JobReleased(f"job {self.claim.job_id}: lease lost")
        if self.cancelled.is_set():
            raise jobs.JobCancelled(f"pipeline {self.claim.pipeline_id} was cancelled")

    def _run(self) -> None:
        last_renew = time.monotonic()
        while not self._done.wait(self.poll):
            try:
                with transaction(self.sessions) as session:
                    if jobs.cancel_requested(session, [self.claim.job_id]):
                        self.cancelled.set()
                    if time.monotonic() - last_renew >= self.renew_every:
                        if not jobs.renew(session, [self.claim], self.lease_seconds):
                            log.warning("repour job %s: lease lost; a worker took over the request",
                                        self.claim.job_id)
                            self.lost.set()
                            return
                        last_renew = time.monotonic()
            except Exception:
                log.exception("repour job %s: lease heartbeat failed", self.claim.job_id)


def api_owner() -> str:
    """The lease owner of synchronous runs in this process (a worker's owner names its host and
    pid the same way, so an operator can tell who holds what)."""
    return f"api:{socket.gethostname()}:{os.getpid()}"


def hold_inline(session: Session, config: Config, *, op_name: str, pipeline_id: int) -> jobs.Claim:
    """The ``repour`` job of a synchronous request, held by this process, in the caller's
    transaction (committed with the pipeline, so the pipeline is never without a lease).

    The payload holds no request: a worker never re-runs it (see :func:`take_over_inline`),
    so the origin URLs (which may carry credentials) are not copied into the queue."""
    return jobs.hold(session, jobs.JobKind.REPOUR, {"op": op_name, "mode": INLINE_MODE, "max_attempts": 1},
                     api_owner(), config.job_lease_seconds, pipeline_id=pipeline_id)


def lease_lost_body() -> dict[str, Any]:
    """What a synchronous caller gets when its request lost its lease: retry (idempotent)."""
    return described_error_body(ProcessingError(
        "this API process stalled past its lease and the request was taken over; "
        "send it again (clone and adjust are idempotent)", exit_code=LEASE_LOST_EXIT_CODE, error_type="LeaseLost"))


def run_inline(runtime: Runtime, op_name: str, spec: dict[str, Any], actor: Actor,
               claim: jobs.Claim) -> tuple[int, dict[str, Any]]:
    """A synchronous request: the same operation, in this process, under ``claim``'s lease,
    recorded in its pipeline. The job and the pipeline are finished in one transaction, and
    only while this process still holds the lease; otherwise the worker that took over has
    recorded the pipeline's end, and the caller is told to retry (503)."""
    pipeline_id = claim.pipeline_id
    if pipeline_id is None:
        raise ValueError("a synchronous run needs its pipeline")
    logger = jobs.JobContext(runtime=runtime, job_id=claim.job_id, kind=jobs.JobKind.REPOUR, payload={}, attempts=1,
                             pipeline_id=pipeline_id)
    lease = InlineLease(runtime.sessions, claim, runtime.config.job_lease_seconds)
    op = Operation(config=runtime.config, sessions=runtime.sessions, spec=spec, actor=actor,
                   stop=lease, output=logger.log, pipeline_id=pipeline_id)
    state: str | None = None
    with lease:
        try:
            status, body = execute(op_name, op)
        except jobs.JobCancelled:
            status, body, state = 400, cancelled_body(spec.get("taskId")), models.CANCELLED
        except jobs.JobReleased:
            return 503, lease_lost_body()
    with transaction(runtime.sessions) as session:
        # Guarded by the lease: exactly one of this process and a worker records the end.
        if not jobs.finish(session, claim, state or models.SUCCEEDED, "cancelled" if state else ""):
            log.warning("repour job %s: lease lost before the result was recorded", claim.job_id)
            return 503, lease_lost_body()
        if state == models.CANCELLED:
            finish_pipeline(session, pipeline_id, None, {}, state=models.CANCELLED)
        else:
            finish_pipeline(session, pipeline_id, status, body)
    return status, body


def take_over_inline(ctx: jobs.JobContext) -> None:
    """A worker claimed the job of a synchronous request whose API process stopped renewing
    its lease (it died, or stalled past the lease): end the pipeline, never re-run it.

    Failing rather than re-running, because the only party waiting for the result was the
    HTTP client of the process that died: its connection is gone, there is no callback to send
    the result to, and it will send the request again (Repour's clients retry), which then
    gets the same answer since clone and adjust are idempotent (fast-forward-only pushes, tags
    deduplicated by tree). A re-run here would spend an alignment run (minutes) for nobody,
    concurrently with that retry. A cancel requested meanwhile ends it as cancelled.
    """
    pipeline_id = ctx.pipeline_id
    if pipeline_id is None:
        raise ValueError(f"repour job {ctx.job_id} of a synchronous request has no pipeline")
    with transaction(ctx.runtime.sessions) as session:
        pipeline = session.get(models.Pipeline, pipeline_id)
        if pipeline is None or pipeline.status in models.FINAL_STATES:
            return
        if jobs.cancel_requested(session, [ctx.job_id]):
            finish_pipeline(session, pipeline_id, None, {}, state=models.CANCELLED)
            return
        body = described_error_body(ProcessingError(INTERRUPTED_DESC, exit_code=LEASE_LOST_EXIT_CODE,
                                                    error_type="Interrupted"))
        finish_pipeline(session, pipeline_id, 503, body, state=models.FAILED)
    ctx.log(f"*** {INTERRUPTED_DESC}\n")
    log.warning("pipeline %s: the API process running it stopped; marked failed", pipeline_id)
