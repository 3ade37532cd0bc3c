"""``gitserver worker``: N job threads in one process, a monitor, a reconciler.

* Job threads claim one job at a time (:func:`gitserver.pipelines.jobs.claim`) and run its
  handler (:func:`job_handlers` wires each kind to its function). Only the kinds this worker
  has handlers for are claimed, so a job for a feature this release lacks stays queued for a
  worker that has it.
* The monitor thread renews the leases of the jobs this process holds (every third of the
  lease) and polls the database for cancel requests about every half second, so a cancel
  issued through any API replica reaches the running step within a second or two.
* The reconcilers (in the monitor thread): every ``job_reconcile_interval`` a pipeline is
  queued for any push recorded without one; every ``refs_reconcile_interval`` the refs on
  disk are compared with the push ledger (gitserver.pipelines.ledger).
* SIGTERM/SIGINT: stop claiming; running jobs get ``job_shutdown_grace`` seconds to finish,
  then are asked to stop (a build step's process group is killed) and their leases are
  released, so another worker re-runs them at once. SIGKILL loses nothing either: the lease
  expires and another worker re-claims the job; steps are idempotent.

:func:`run_pipeline_job` is the handler of ``pipeline`` jobs: archive every updated ref, then
build each updated branch (and each tag whose pipeline file opts in) in push order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pygit2
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver import metrics
from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.errors import is_disk_full
from gitserver.git import push_options, refs
from gitserver.git.archive import STALE_LOCK_SECONDS, RefLocked, read_blob
from gitserver.logs import bind
from gitserver.pipelines import build, jobs, ledger, notify, oncreate
from gitserver.pipelines.archive import ArchiveResult, archive_ref
from gitserver.pipelines.queue import enqueue_push_pipeline
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
# A push this old without a pipeline was lost (push and pipeline commit together, so a
# younger one may just not be visible yet on a replica's snapshot).
RECONCILE_MIN_AGE = dt.timedelta(seconds=5)
RECONCILE_BATCH = 100
# Only the newest pushes are looked at (a primary-key range, so each pass stays cheap however
# long the audit log grows); a lost pipeline is found within seconds, long before it leaves it.
RECONCILE_WINDOW = 50_000
# A pipeline whose job ended this long ago without the pipeline being finished was orphaned.
ORPHAN_MIN_AGE = dt.timedelta(seconds=60)
# After the grace, how long released jobs get to stop before their leases are dropped anyway.
RELEASE_WAIT = 5.0
ERROR_BACKOFF = 2.0
DISK_FULL_BACKOFF_MAX = 30.0
# Length of the steps.name column.
STEP_NAME_MAX = 200


# --- the process -----------------------------------------------------------------------------

def run(cfg: Config, concurrency: int | None = None) -> int:
    """Entry point of ``gitserver worker``: runs until SIGTERM/SIGINT, returns the exit code."""
    n = max(1, concurrency if concurrency is not None else cfg.workers)
    runtime = Runtime.create(cfg, pool_size=n + 2)
    worker = Worker(runtime, n)
    signal.signal(signal.SIGTERM, lambda _s, _f: worker.stop())
    signal.signal(signal.SIGINT, lambda _s, _f: worker.stop())
    try:
        worker.serve()
    finally:
        runtime.dispose()
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

    def __init__(self, runtime: Runtime, concurrency: int) -> None:
        self.runtime = runtime
        self.cfg = runtime.config
        self.concurrency = concurrency
        self.stopping = threading.Event()
        # Idle job threads sleep on this between polls; a PostgreSQL NOTIFY sets it.
        self.wake = threading.Event()
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}"
        self.handlers = job_handlers()
        self.kinds = list(self.handlers)
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def serve(self) -> None:
        _protect_data_dir(self.cfg)
        if swept := build.sweep_stale_workspaces():
            log.info("removed %d build workspace(s) left by dead workers", swept)
        try:
            ledger.startup_pass(self.runtime, "worker")
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
                    reconcile(self.runtime)
                    repair_orphaned_pipelines(self.runtime)
                    last_reconcile = now
                if not self.stopping.is_set() and now - last_refs >= self.cfg.refs_reconcile_interval:
                    ledger.periodic_pass(self.runtime, "worker")
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


def job_handlers() -> dict[str, jobs.Handler]:
    """Every job kind and the function that runs it: the worker's composition root."""
    from gitserver.repour import job as repour_job

    handlers: dict[str, jobs.Handler] = {
        "pipeline": run_pipeline_job,
        "webhook": notify.run_delivery_job,
        "callback": notify.run_delivery_job,
        "repour": repour_job.run_repour_job,
    }
    assert set(handlers) == set(jobs.KINDS), "a job kind without a handler (or the reverse)"
    return handlers


def _protect_data_dir(cfg: Config) -> None:
    """As root, builds run as another user: keep that user out of the data dir."""
    if os.geteuid() != 0 or not cfg.data_dir.is_dir():
        return
    mode = cfg.data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(cfg.data_dir, mode & 0o700)
        log.info("data dir %s set to mode 0%o so build steps cannot read it", cfg.data_dir,
                 mode & 0o700)


def reconcile(runtime: Runtime) -> int:
    """Queue a pipeline for each push recorded without one; returns how many were queued."""
    cutoff = utcnow() - RECONCILE_MIN_AGE
    with transaction(runtime.sessions) as session:
        newest = session.scalar(select(func.max(models.Push.id))) or 0
        push_ids = list(session.scalars(
            select(models.Push.id)
            .outerjoin(models.Pipeline, models.Pipeline.push_id == models.Push.id)
            .where(models.Push.id > newest - RECONCILE_WINDOW)
            .where(models.Pipeline.id.is_(None), models.Push.created_at < cutoff)
            .where(models.Push.id.in_(select(models.RefUpdate.push_id).where(
                ~models.RefUpdate.new.in_((refs.ZERO_OID, refs.ZERO_OID_SHA256)))))
            .order_by(models.Push.id).limit(RECONCILE_BATCH)))
    queued = 0
    for push_id in push_ids:
        try:
            with transaction(runtime.sessions) as session:
                push = session.get(models.Push, push_id)
                if push is not None and enqueue_push_pipeline(session, push) is not None:
                    queued += 1
                    log.warning("push %s had no pipeline; queued one", push_id)
        except IntegrityError:
            pass  # another replica's reconciler (or the push itself) got there first
    return queued


def repair_orphaned_pipelines(runtime: Runtime) -> int:
    """Fail push pipelines left unfinished although their job is over (the handler could not
    record the verdict, e.g. the database went away at that moment); returns how many.

    Without this such a pipeline would show ``running`` forever: its job is final, so no
    worker will ever pick it up again.
    """
    cutoff = utcnow() - ORPHAN_MIN_AGE
    live_job = (select(models.Job.id)
                .where(models.Job.pipeline_id == models.Pipeline.id,
                       or_(models.Job.status.in_((models.QUEUED, models.RUNNING)),
                           models.Job.updated_at >= cutoff)))
    any_job = select(models.Job.id).where(models.Job.pipeline_id == models.Pipeline.id)
    with transaction(runtime.sessions) as session:
        orphans = session.scalars(
            select(models.Pipeline)
            .where(models.Pipeline.kind == "push",
                   models.Pipeline.status.in_((models.QUEUED, models.RUNNING)),
                   any_job.exists(), ~live_job.exists())
            .limit(RECONCILE_BATCH)).all()
        now = utcnow()
        for pipeline in orphans:
            log.warning("pipeline %s was left %s after its job ended; marked failed",
                        pipeline.id, pipeline.status)
            pipeline.status = models.FAILED
            pipeline.error = "the worker running this pipeline could not record its result"
            pipeline.finished_at = now
        return len(orphans)


# --- the pipeline handler --------------------------------------------------------------------

class PipelineFailed(Exception):
    """A step failed: the pipeline's verdict, not a fault of the worker."""


class _Misconfigured(PipelineFailed):
    """Builds cannot run on this worker at all: no other ref is tried."""


def _step_name(prefix: str, name: str) -> str:
    """``<ref>: <step>``, shortened in the middle of the ref to fit the 200-character column."""
    full = f"{prefix}{name}"
    if len(full) <= STEP_NAME_MAX:
        return full
    room = STEP_NAME_MAX - len(name) - len(": ") - 1
    ref = prefix[:-len(": ")]
    return f"{ref[:room // 2]}…{ref[len(ref) - (room - room // 2):]}: {name}"


def run_pipeline_job(ctx: jobs.JobContext) -> None:
    """Handler of ``pipeline`` jobs: archive every updated ref, then build when enabled."""
    pipeline_id = ctx.pipeline_id or int(ctx.payload["pipeline_id"])
    run = PipelineRun(ctx, pipeline_id)
    if not run.start():
        return
    run.reconcile_repository()
    try:
        run.execute()
    except jobs.JobCancelled:
        run.end(models.CANCELLED, "cancelled")
        raise
    except jobs.JobReleased:
        ctx.log("*** released by this worker; another worker will run the pipeline again\n")
        raise
    except jobs.RetryLater:
        raise  # the pipeline stays running; its job runs again after the delay
    except PipelineFailed as exc:
        run.end(models.FAILED, str(exc))
        return
    except Exception as exc:
        if is_disk_full(exc):
            raise  # not the pipeline's fault: the worker gives the job back (Worker._execute)
        run.end(models.FAILED, f"internal error: {type(exc).__name__}")
        raise
    run.end(models.SUCCEEDED, "")


class PipelineRun:
    """One attempt at one pipeline; writes its Pipeline and Step rows."""

    def __init__(self, ctx: jobs.JobContext, pipeline_id: int) -> None:
        self.ctx = ctx
        self.pipeline_id = pipeline_id
        self.sessions = ctx.runtime.sessions
        self.cfg = ctx.runtime.config
        self.started = time.monotonic()
        self.position = 0
        self.archives: list[dict[str, object]] = []
        self.results: list[ArchiveResult] = []
        self._sandbox: build.Sandbox | None = None
        self.variables: tuple[tuple[str, str], ...] = ()  # from git push -o ci.variable=K=V

    def start(self) -> bool:
        """Mark the pipeline running; False when there is nothing to do (already final)."""
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            if pipeline is None:
                raise RuntimeError(f"pipeline {self.pipeline_id} does not exist")
            if pipeline.status == models.CANCELLED:
                raise jobs.JobCancelled(f"pipeline {self.pipeline_id} was cancelled")
            if pipeline.status in models.FINAL_STATES:
                log.info("pipeline %s is already %s", self.pipeline_id, pipeline.status)
                return False
            result = session.execute(
                update(models.Pipeline)
                .where(models.Pipeline.id == self.pipeline_id,
                       models.Pipeline.status.in_((models.QUEUED, models.RUNNING)))
                .values(status=models.RUNNING, started_at=utcnow(), finished_at=None, error="")
                .execution_options(synchronize_session=False))
            if not rowcount(result):
                raise jobs.JobCancelled(f"pipeline {self.pipeline_id} was cancelled")
        if self.ctx.attempts > 1:
            self.ctx.log(f"\n*** attempt {self.ctx.attempts} (the previous run did not finish)\n")
        self.ctx.check_cancelled()
        return True

    def reconcile_repository(self) -> None:
        """Every push to a repository reconciles it: refs that reached its disk without a
        record (a crash elsewhere) get theirs now, not at the next periodic pass."""
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            repo_id = pipeline.repo_id if pipeline is not None else None
        if repo_id is None:
            return
        try:
            ledger.reconcile_one(self.sessions, self.ctx.runtime.store.root, repo_id,
                                 intent_grace=self.cfg.receive_finish_timeout)
        except Exception:  # the periodic pass tries again; the push goes on
            log.exception("reconciling repository %s failed", repo_id)

    def execute(self) -> None:
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            assert pipeline is not None
            repo = session.get(models.Repository, pipeline.repo_id)
            assert repo is not None
            updates = _pipeline_updates(session, pipeline)
            kind, request = pipeline.kind, json.loads(pipeline.request or "{}")
            options = _push_options(session, pipeline)
            session.expunge(repo)
        if kind == oncreate.KIND_CREATE:
            self._create(repo, request)
            return
        self._archive(repo, updates)
        self.variables = options.variables
        if repo.builds_enabled and self.results and options.skip_ci:
            self.ctx.log(f"\nnot built: the push asked for it ({push_options.CI_SKIP})\n")
        elif repo.builds_enabled and self.results:
            self._build_refs(repo)

    # --- create (a repository appeared; gitserver.pipelines.oncreate) -----------------------

    def _create(self, repo: models.Repository, request: dict[str, Any]) -> None:
        """Run the tenant's create template for the new repository ``repo``."""
        step = self._step_start("template")
        t0 = time.monotonic()
        try:
            plan = oncreate.plan_create(self.sessions, self.ctx.runtime.store, self.cfg, repo, request,
                                        self.pipeline_id)
        except oncreate.TemplateProblem as exc:
            self.ctx.log(f"{exc}\n")
            self._step_end(step, models.FAILED, None, str(exc)[:500], t0)
            raise PipelineFailed(str(exc)) from exc
        self.ctx.log(f"{plan.summary}\n")
        self._step_end(step, models.SUCCEEDED, 0, f"{len(plan.specs)} step(s)", t0)
        if plan.specs and plan.coords is not None and plan.path is not None:
            self._run_steps(plan.coords, plan.path, plan.clone_ref, plan.specs, "")

    # --- archive ---------------------------------------------------------------------------

    def _archive(self, repo: models.Repository, updates: list[tuple[str, str]]) -> ArchiveResult | None:
        path = self.ctx.runtime.store.path(repo.tenant.name, repo.name)
        step = self._step_start("archive")
        t0 = time.monotonic()
        primary: ArchiveResult | None = None
        skipped: list[str] = []
        try:
            for ref, new in updates:
                self.ctx.check_cancelled()
                result = archive_ref(self.sessions, path, repo, ref, new, self.pipeline_id)
                if result is None:
                    self.ctx.log(f"{ref}: {new} names no commit or tree (a tag of a blob?); "
                                 "nothing to archive, skipped\n")
                    skipped.append(ref)
                    continue
                verb = "archived as" if result.created else "same tree as before:"
                self.ctx.log(f"{ref} {new[:12]} (tree {result.tree_id[:12]}) {verb} {result.tag}\n")
                self.archives.append(result.as_dict())
                self.results.append(result)
                primary = primary or result
        except jobs.JobCancelled:
            self._step_end(step, models.CANCELLED, None, "cancelled", t0)
            raise
        except RefLocked as exc:
            # A worker killed while writing an archive ref leaves its lock file behind: retry
            # once it is old enough to be known stale (git/archive.STALE_LOCK_SECONDS).
            self._step_end(step, models.QUEUED, None, f"{exc}; retrying"[:500], t0)
            self.ctx.log(f"{exc}; the pipeline will retry in {STALE_LOCK_SECONDS:.0f} s\n")
            raise jobs.RetryLater(STALE_LOCK_SECONDS, str(exc)) from exc
        except Exception as exc:
            self._step_end(step, models.FAILED, None, f"{type(exc).__name__}: {exc}"[:500], t0)
            raise
        note = (f"skipped (no commit or tree to archive): {', '.join(skipped)}"[:500]
                if skipped else "")
        self._step_end(step, models.SUCCEEDED, 0, note, t0)
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            assert pipeline is not None
            pipeline.archive_tag = primary.tag if primary else ""
            pipeline.result = json.dumps({"archives": self.archives})
        return primary

    # --- build -----------------------------------------------------------------------------

    def _build_refs(self, repo: models.Repository) -> None:
        """Build every updated ref that is built: each branch tip, and each tag whose own
        pipeline file says ``build_tags = true``; other refs (notes, custom namespaces) never.

        One build per ref, in push order, each from that ref's own archive and pipeline file
        and with that ref's ``GITSERVER_REF``/``GITSERVER_COMMIT``/``GITSERVER_TAG``. When the
        push updated more than one ref, step names are ``<ref>: <step>`` (a one-ref push keeps
        the plain names). A ref whose build fails does not stop the other refs' builds; the
        pipeline fails naming every ref that failed. Cancel and worker shutdown stop at once.
        """
        several = len(self.results) > 1
        failures: list[str] = []
        for result in self.results:
            prefix = f"{result.ref}: " if several else ""
            if not result.ref.startswith(("refs/heads/", "refs/tags/")):
                self.ctx.log(f"\n{result.ref}: not built (only branches, and tags when the "
                             "pipeline file opts in, are built)\n")
                continue
            try:
                spec = self._read_pipeline_file(repo, result, prefix)
                if spec is None:
                    continue
                if result.ref.startswith("refs/tags/") and not spec.build_tags:
                    self.ctx.log(f"{result.ref}: a tag; not built (add build_tags = true to "
                                 f"{build.PIPELINE_FILE} to build tags)\n")
                    continue
                self._build(repo, result, spec.steps, prefix)
            except _Misconfigured:
                raise
            except PipelineFailed as exc:
                failures.append(f"{prefix}{exc}")
        if failures:
            raise PipelineFailed("; ".join(failures))

    def _sandbox_for_builds(self) -> build.Sandbox:
        """This worker's sandbox, decided once per pipeline (and logged once)."""
        if self._sandbox is None:
            try:
                self._sandbox = build.Sandbox.from_config(self.cfg)
            except build.SandboxError as exc:  # a configuration problem the operator must fix
                self.ctx.log(f"{exc}\n")
                raise _Misconfigured(f"builds are misconfigured on this worker: {exc}") from exc
            self.ctx.log(f"{self._sandbox.describe()}\n")
        return self._sandbox

    def _build(self, repo: models.Repository, result: ArchiveResult, specs: list[build.StepSpec],
               prefix: str) -> None:
        coords = build.Coordinates(
            repo=repo.full_name, ref=result.ref, commit=result.source_commit, tag=result.tag,
            readonly_url=f"{self.cfg.http_base_url}/git/{repo.tenant.name}/{repo.name}.git")
        path = self.ctx.runtime.store.path(repo.tenant.name, repo.name)
        self._run_steps(coords, path, result.tag, specs, prefix)

    def _run_steps(self, coords: build.Coordinates, path: Path, clone_ref: str,
                   specs: list[build.StepSpec], prefix: str) -> None:
        """Run ``specs``, each in a fresh clone of ``clone_ref`` of the repository at ``path``."""
        sandbox = self._sandbox_for_builds()
        for spec in specs:
            self.ctx.check_cancelled()
            self.ctx.check_released()
            step = self._step_start(_step_name(prefix, spec.name))
            t0 = time.monotonic()
            self.ctx.log(f"\n=== step {prefix}{spec.name}: {' '.join(spec.argv)}\n")
            try:
                workspace = build.prepare_workspace(path, clone_ref, sandbox)
            except build.SandboxError as exc:
                self.ctx.log(f"{exc}\n")
                self._step_end(step, models.FAILED, None, str(exc)[:500], t0)
                raise PipelineFailed(f"step {spec.name}: {exc}") from exc
            except Exception as exc:
                self._step_end(step, models.FAILED, None, f"{type(exc).__name__}: {exc}"[:500], t0)
                raise
            try:
                outcome = build.run_step(self.ctx, spec, workspace, coords, sandbox, self.variables)
            finally:
                build.remove_workspace(workspace)
            if outcome.status == "released":
                self._step_end(step, models.QUEUED, outcome.exit_code, outcome.message, t0)
                raise jobs.JobReleased("worker shutting down")
            self._step_end(step, outcome.status, outcome.exit_code, outcome.message, t0)
            if outcome.status == models.CANCELLED:
                raise jobs.JobCancelled("cancelled during a build step")
            if outcome.status != models.SUCCEEDED:
                raise PipelineFailed(f"step {spec.name} failed: {outcome.message}")

    def _read_pipeline_file(self, repo: models.Repository, result: ArchiveResult,
                            prefix: str) -> build.PipelineSpec | None:
        """The pipeline file of ``result``'s tree, parsed; None when there is none."""
        step = self._step_start(_step_name(prefix, "pipeline-file"))
        t0 = time.monotonic()
        git = pygit2.Repository(str(self.ctx.runtime.store.path(repo.tenant.name, repo.name)))
        try:
            data = read_blob(git, result.tree_id, build.PIPELINE_FILE, build.MAX_PIPELINE_FILE)
            if data is None:
                self.ctx.log(f"{prefix}no {build.PIPELINE_FILE} in the pushed tree: nothing to build\n")
                self._step_end(step, models.SUCCEEDED, 0, "no pipeline file", t0)
                return None
            spec = build.parse_pipeline(data.decode("utf-8"))
        except (ValueError, build.PipelineFileError) as exc:
            message = str(exc) if isinstance(exc, build.PipelineFileError) else (
                f"{build.PIPELINE_FILE}: {exc}")
            self.ctx.log(f"{prefix}{message}\n")
            self._step_end(step, models.FAILED, None, message, t0)
            raise PipelineFailed(message) from exc
        skipped = result.ref.startswith("refs/tags/") and not spec.build_tags
        self._step_end(step, models.SUCCEEDED, 0,
                       "a tag, and build_tags is not set: not built" if skipped
                       else f"{len(spec.steps)} step(s)", t0)
        return spec

    # --- rows ------------------------------------------------------------------------------

    def _step_start(self, name: str) -> int:
        """Get or create this pipeline's step at the next position (a re-run reuses rows)."""
        position = self.position
        self.position += 1
        with transaction(self.sessions) as session:
            step = session.scalar(select(models.Step).where(
                and_(models.Step.pipeline_id == self.pipeline_id, models.Step.position == position)))
            if step is None:
                step = models.Step(pipeline_id=self.pipeline_id, position=position, name=name)
                session.add(step)
            step.name = name
            step.status = models.RUNNING
            step.exit_code = None
            step.message = ""
            step.started_at = utcnow()
            step.finished_at = None
            session.flush()
            return step.id

    def _step_end(self, step_id: int, status: str, exit_code: int | None, message: str,
                  t0: float) -> None:
        with transaction(self.sessions) as session:
            step = session.get(models.Step, step_id)
            assert step is not None
            step.status = status
            step.exit_code = exit_code
            step.message = message
            step.finished_at = None if status == models.QUEUED else utcnow()
        if status != models.QUEUED:
            metrics.step_finished(status, time.monotonic() - t0)

    def end(self, status: str, error: str) -> None:
        """Final state of the pipeline, its leftover steps, metrics and the notification."""
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            assert pipeline is not None
            pipeline.status = status
            pipeline.error = error[:4000]
            pipeline.finished_at = utcnow()
            for step in pipeline.steps:
                if step.status in (models.QUEUED, models.RUNNING):
                    step.status = models.CANCELLED if status == models.CANCELLED else models.FAILED
                    step.finished_at = pipeline.finished_at
            session.flush()
            notify_pipeline(session, pipeline)
        self.ctx.log(f"\n*** pipeline {status}{': ' + error if error else ''}\n")
        metrics.pipeline_finished(status, time.monotonic() - self.started)
        log.info("pipeline %s %s%s", self.pipeline_id, status, f": {error}" if error else "")


def _pipeline_updates(session: Session, pipeline: models.Pipeline) -> list[tuple[str, str]]:
    """(ref, new commit) of every ref the pipeline's push created or moved."""
    if pipeline.push_id is not None:
        push = session.get(models.Push, pipeline.push_id)
        if push is not None:
            live = [(u.ref, u.new) for u in push.ref_updates if not refs.is_zero(u.new)]
            if live:
                return live
    return [(pipeline.ref, pipeline.commit)] if pipeline.commit else []


def _push_options(session: Session, pipeline: models.Pipeline) -> push_options.PushOptions:
    """The options of the pipeline's push; none when they cannot be read (an old row)."""
    push = session.get(models.Push, pipeline.push_id) if pipeline.push_id is not None else None
    try:
        return push_options.parse(json.loads(push.push_options or "[]") if push else [])
    except (ValueError, TypeError):  # checked when pushed; a row that fails now builds plainly
        log.warning("pipeline %s: push options of push %s are unreadable", pipeline.id, pipeline.push_id)
        return push_options.PushOptions()


def notify_pipeline(session: Session, pipeline: models.Pipeline) -> None:
    """Queue the ``pipeline`` webhooks of the repository (same transaction as the verdict).
    The body is rendered from the pipeline row at the first delivery attempt."""
    notify.enqueue_event(session, pipeline.repo_id, notify.EVENT_PIPELINE, {"pipeline_id": pipeline.id})
