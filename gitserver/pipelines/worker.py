"""``gitserver worker``: N job threads in one process, a monitor, a reconciler.

* Job threads claim one job at a time (:func:`gitserver.pipelines.jobs.claim`) and run its
  handler (``gitserver.cmd.wiring.job_handlers`` wires each kind to its function). Only the kinds this worker
  has handlers for are claimed, so a job for a feature this release lacks stays queued for a
  worker that has it.
* The monitor thread renews the leases of the jobs this process holds (every third of the
  lease) and polls the database for cancel requests about every half second, so a cancel
  issued through any API replica reaches the running step within a second or two.
* The reconcilers (in the monitor thread): every ``job_reconcile_interval`` a pipeline is
  queued for any push recorded without one and orphaned pipelines are failed
  (gitserver.pipelines.push), old pipeline logs are pruned (gitserver.pipelines.logstore) and
  the web console's dead sign-in links and sessions deleted
  (gitserver.identity.weblogin_retention); every ``refs_reconcile_interval`` the refs on disk
  are compared with the push ledger (gitserver.push.reconcile).
* SIGTERM/SIGINT: stop claiming; running jobs get ``job_shutdown_grace`` seconds to finish,
  then are asked to stop (a build step's process group is killed) and their leases are
  released, so another worker re-runs them at once. SIGKILL loses nothing either: the lease
  expires and another worker re-claims the job; steps are idempotent.

The handlers live with what they run: ``pipeline`` jobs in :mod:`gitserver.pipelines.push`,
``webhook`` and ``callback`` deliveries in :mod:`gitserver.pipelines.deliver`, ``repour`` jobs
with Repour; the durable queue itself is :mod:`gitserver.pipelines.jobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.identity import weblogin_retention
from gitserver.observe import metrics
from gitserver.observe.logs import bind
from gitserver.pipelines import jobs, logstore, repair, workspaces
from gitserver.policy.errors import is_disk_full
from gitserver.push import reconcile
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
# After the grace, how long released jobs get to stop before their leases are dropped anyway.
RELEASE_WAIT = 5.0
ERROR_BACKOFF = 2.0
DISK_FULL_BACKOFF_MAX = 30.0


# --- the process -----------------------------------------------------------------------------

def run(runtime: Runtime, handlers: Mapping[str, jobs.Handler], concurrency: int) -> int:
    """``gitserver worker`` (built by ``gitserver.cmd.wiring``): runs the job kinds of
    ``handlers`` on ``concurrency`` threads until SIGTERM/SIGINT, returns the exit code."""
    worker = Worker(runtime, concurrency, handlers)
    signal.signal(signal.SIGTERM, lambda _s, _f: worker.stop())
    signal.signal(signal.SIGINT, lambda _s, _f: worker.stop())
    worker.serve()
    return 0


@dataclasses.dataclass
class _Held:
    claim: jobs.Claim
    ctx: jobs.JobContext


class DiskFullBackoff:
    """How long a job thread waits after "database or disk is full": doubling from
    ERROR_BACKOFF up to DISK_FULL_BACKOFF_MAX, one log line when it starts and one when space
    is back (a traceback a second would only fill the disk further)."""

    def __init__(self) -> None:
        self.delay = 0.0

    def failed(self, exc: BaseException) -> float:
        if not self.delay:
            log.warning("disk full (%s): no job is claimed until there is space again; retrying "
                        "with backoff", exc)
        self.delay = min(DISK_FULL_BACKOFF_MAX, (self.delay * 2) or ERROR_BACKOFF)
        return self.delay

    def succeeded(self) -> None:
        if self.delay:
            log.warning("disk space is back: claiming jobs again")
            self.delay = 0.0


class Worker:
    """The job threads, the monitor and the reconciler of one worker process."""

    def __init__(self, runtime: Runtime, concurrency: int, handlers: Mapping[str, jobs.Handler]) -> None:
        self.runtime = runtime
        self.cfg = runtime.config
        self.concurrency = concurrency
        self.stopping = threading.Event()
        # Idle job threads sleep on this between polls; a PostgreSQL NOTIFY sets it.
        self.wake = threading.Event()
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}"
        self.handlers = dict(handlers)
        self.kinds = list(self.handlers)
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def serve(self) -> None:
        _protect_data_dir(self.cfg)
        if swept := workspaces.sweep_stale_workspaces():
            log.info("removed %d build workspace(s) left by dead workers", swept)
        try:
            reconcile.startup_pass(self.runtime, "worker")
        except Exception:  # the periodic pass tries again
            log.exception("reconciling refs at start failed")
        log.info("worker %s: %d thread(s), job kinds %s", self.owner_prefix, self.concurrency,
                 ", ".join(self.kinds))
        threads = [threading.Thread(target=self._loop, args=(i,), name=f"job-{i}", daemon=True)
                   for i in range(self.concurrency)]
        helpers = [threading.Thread(target=self._monitor, name="job-monitor", daemon=True)]
        if self.runtime.engine.dialect.name == "postgresql":
            helpers.append(threading.Thread(target=self._listen, name="job-listener", daemon=True))
        for thread in [*threads, *helpers]:
            thread.start()
        while not self.stopping.wait(1.0):
            pass
        log.info("worker %s stopping: no new jobs; %d running", self.owner_prefix, len(self._held))
        self._drain(threads)

    def _drain(self, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.cfg.job_shutdown_grace
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        held = self._snapshot()
        if held:
            log.info("shutdown grace over: releasing %d job(s)", len(held))
            for h in held:
                h.ctx.release_event.set()
            deadline = time.monotonic() + RELEASE_WAIT
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        for h in self._snapshot():  # handlers that ignored the request: drop their leases
            try:
                with transaction(self.runtime.sessions) as session:
                    jobs.release(session, h.claim)
                log.warning("job %s released while its handler still ran", h.claim.job_id)
            except Exception:  # the lease will expire instead
                log.exception("could not release job %s", h.claim.job_id)

    def _snapshot(self) -> list[_Held]:
        with self._lock:
            return list(self._held.values())

    # --- job threads ---------------------------------------------------------------------------

    def _loop(self, index: int) -> None:
        owner = f"{self.owner_prefix}:{index}:{uuid.uuid4().hex[:8]}"
        full = DiskFullBackoff()
        while not self.stopping.is_set():
            try:
                with transaction(self.runtime.sessions) as session:
                    claim = jobs.claim(session, owner, self.cfg.job_lease_seconds, self.kinds)
            except Exception as exc:  # database hiccup: wait and retry
                if is_disk_full(exc):
                    self.stopping.wait(full.failed(exc))
                    continue
                log.exception("claiming a job failed")
                self.stopping.wait(ERROR_BACKOFF)
                continue
            full.succeeded()
            if claim is None:
                self.wake.wait(self.cfg.job_poll_interval)
                self.wake.clear()
                continue
            self.run_claim(claim)

    def run_claim(self, claim: jobs.Claim) -> str:
        """Run one claimed job's handler and record the outcome; returns the job's state."""
        ctx = jobs.JobContext(runtime=self.runtime, job_id=claim.job_id, kind=claim.kind,
                              payload=claim.payload, attempts=claim.attempts,
                              pipeline_id=claim.pipeline_id, cancel_event=threading.Event())
        with self._lock:
            self._held[claim.job_id] = _Held(claim, ctx)
        started = time.monotonic()
        try:
            with bind(pipeline_id=claim.pipeline_id):
                state = self._execute(claim, ctx)
        finally:
            with self._lock:
                self._held.pop(claim.job_id, None)
        metrics.job_finished(claim.kind, state, time.monotonic() - started)
        return state

    def _execute(self, claim: jobs.Claim, ctx: jobs.JobContext) -> str:
        try:
            self.handlers[claim.kind](ctx)
        except jobs.RetryLater as exc:
            delay, message = exc.delay, exc.message  # `exc` is unbound once the except ends
            return self._record(claim, lambda s: jobs.retry(s, claim, delay, message))
        except jobs.JobCancelled:
            return self._record(claim, lambda s: _finish(s, claim, models.CANCELLED, "cancelled"))
        except jobs.JobReleased:
            return self._record(claim, lambda s: models.QUEUED if jobs.release(s, claim) else "lost")
        except Exception as exc:  # the job fails; the worker goes on
            if is_disk_full(exc):
                # Not the job's fault: give it back to run again once there is space (if even
                # that cannot be written, its lease expires and it is re-run all the same).
                log.warning("job %s (%s) stopped: disk full; it will run again", claim.job_id, claim.kind)
                return self._record(claim, lambda s: models.QUEUED if jobs.release(s, claim) else "lost")
            log.exception("job %s (%s) failed", claim.job_id, claim.kind)
            message = f"{type(exc).__name__}: {exc}"
            return self._record(claim, lambda s: _finish(s, claim, models.FAILED, message))
        return self._record(claim, lambda s: _finish(s, claim, models.SUCCEEDED, ""))

    def _record(self, claim: jobs.Claim, write: Any) -> str:
        try:
            with transaction(self.runtime.sessions) as session:
                state = write(session)
        except Exception:  # the lease expires and another worker re-runs it
            log.exception("recording the outcome of job %s failed", claim.job_id)
            return "lost"
        if state == "lost":
            log.warning("job %s: lease lost to another worker; its outcome was not recorded",
                        claim.job_id)
        return str(state)

    def _listen(self) -> None:
        """PostgreSQL only: LISTEN for new jobs and wake the idle job threads."""
        while not self.stopping.is_set():
            raw = None
            try:
                raw = self.runtime.engine.raw_connection()
                conn = raw.driver_connection
                raw.detach()  # this thread keeps the connection; it never goes back to the pool
                conn.autocommit = True  # type: ignore[union-attr]
                conn.execute(f"LISTEN {jobs.WAKE_CHANNEL}")  # type: ignore[union-attr]
                while not self.stopping.is_set():
                    for _notify in conn.notifies(timeout=1.0, stop_after=1):  # type: ignore[union-attr]
                        self.wake.set()
            except Exception:  # polling still works; try again shortly
                log.warning("job listener: LISTEN failed; idle workers fall back to polling",
                            exc_info=True)
                self.stopping.wait(5.0)
            finally:
                if raw is not None:
                    with contextlib.suppress(Exception):
                        raw.close()

    # --- monitor: leases, cancels, reconciler ----------------------------------------------

    def _monitor(self) -> None:
        renew_every = max(0.5, self.cfg.job_lease_seconds / 3)
        last_renew = last_reconcile = last_refs = time.monotonic()
        while not self.stopping.wait(CANCEL_POLL_SECONDS) or self._snapshot():
            now = time.monotonic()
            try:
                held = self._snapshot()
                if held:
                    self._poll_cancels(held)
                if held and now - last_renew >= renew_every:
                    self._renew(held)
                    last_renew = now
                if not self.stopping.is_set() and now - last_reconcile >= self.cfg.job_reconcile_interval:
                    repair.reconcile(self.runtime)
                    repair.repair_orphaned_pipelines(self.runtime)
                    logstore.prune(self.runtime.sessions, self.cfg.pipeline_log_retention_days)
                    weblogin_retention.prune(self.runtime.sessions)
                    last_reconcile = now
                if not self.stopping.is_set() and now - last_refs >= self.cfg.refs_reconcile_interval:
                    reconcile.periodic_pass(self.runtime, "worker")
                    last_refs = now
            except Exception:  # keep monitoring; the next pass retries
                log.exception("job monitor pass failed")

    def _poll_cancels(self, held: list[_Held]) -> None:
        with transaction(self.runtime.sessions) as session:
            cancelled = jobs.cancel_requested(session, [h.claim.job_id for h in held])
        for h in held:
            if h.claim.job_id in cancelled and h.ctx.cancel_event is not None:
                h.ctx.cancel_event.set()

    def _renew(self, held: list[_Held]) -> None:
        with transaction(self.runtime.sessions) as session:
            kept = jobs.renew(session, [h.claim for h in held], self.cfg.job_lease_seconds)
        for h in held:
            if h.claim.job_id not in kept and self._is_held(h.claim.job_id):
                # Another worker took the job over (this one stalled past its lease): stop
                # our copy; the other one owns the job and its pipeline now.
                log.warning("job %s: lease lost; stopping this worker's run", h.claim.job_id)
                h.ctx.release_event.set()

    def _is_held(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._held


def _finish(session: Session, claim: jobs.Claim, status: str, error: str) -> str:
    return status if jobs.finish(session, claim, status, error) else "lost"


def _protect_data_dir(cfg: Config) -> None:
    """As root, builds run as another user: keep that user out of the data dir."""
    if os.geteuid() != 0 or not cfg.data_dir.is_dir():
        return
    mode = cfg.data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(cfg.data_dir, mode & 0o700)
        log.info("data dir %s set to mode 0%o so build steps cannot read it", cfg.data_dir,
                 mode & 0o700)
