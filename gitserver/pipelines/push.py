"""The push pipeline: the handler of ``pipeline`` jobs (the reconcilers that keep every push's
pipeline alive are in :mod:`gitserver.pipelines.repair`).

A pipeline is queued with its push (:func:`gitserver.push.ledger.enqueue_push_pipeline`)
or when a repository is created from a template (:mod:`gitserver.pipelines.oncreate`). The
worker (:mod:`gitserver.pipelines.worker`) runs :func:`run_pipeline_job` for it: archive every
updated ref (:mod:`gitserver.pipelines.archive`), then build each updated branch (and each tag
whose pipeline file opts in) in push order (:mod:`gitserver.pipelines.build`), then record the
verdict and queue the ``pipeline`` webhooks (:mod:`gitserver.pipelines.outbox`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pygit2
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import rowcount, transaction
from gitserver.git import push_options, refs
from gitserver.git.archive import STALE_LOCK_SECONDS, RefLocked, read_blob
from gitserver.net.urls import http_clone_url
from gitserver.observe import metrics
from gitserver.pipelines import build, jobs, maintain, oncreate, outbox, pipelinefile, workspaces
from gitserver.pipelines.archive import ArchiveResult, archive_ref
from gitserver.policy.errors import is_disk_full
from gitserver.provenance import archive_tags
from gitserver.provenance.pushlog import PushLog
from gitserver.push import ledger
from gitserver.push.reconcile import reconcile_one

log = logging.getLogger(__name__)

# Length of the steps.name column.
STEP_NAME_MAX = 200


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
        self._sandbox: workspaces.Sandbox | None = None
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
        record (a crash elsewhere) get theirs now, not at the next periodic pass. Then its
        pack count is checked and maintenance queued when due (gitserver.pipelines.maintain)."""
        with transaction(self.sessions) as session:
            pipeline = session.get(models.Pipeline, self.pipeline_id)
            repo_id = pipeline.repo_id if pipeline is not None else None
        if repo_id is None:
            return
        try:
            reconcile_one(self.sessions, self.ctx.runtime.store.root, repo_id,
                          intent_grace=self.cfg.receive_finish_timeout, push_log=PushLog(self.cfg))
        except Exception:  # the periodic pass tries again; the push goes on
            log.exception("reconciling repository %s failed", repo_id)
        try:  # many pushes leave many packs: queue a repack once a threshold is crossed
            maintain.queue_if_needed(self.ctx.runtime, repo_id)
        except Exception:  # the next push checks again; this one goes on
            log.exception("checking whether repository %s needs maintenance failed", repo_id)
        try:  # the first push gives the repository its bundle; maintenance refreshes it
            maintain.bundle_if_missing(self.ctx.runtime, repo_id)
        except Exception:  # the next push tries again
            log.exception("writing the bundle of repository %s failed", repo_id)

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
        if kind == models.PipelineKind.CREATE:
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
            key = archive_tags.load_key(self.cfg)
            for ref, new in updates:
                self.ctx.check_cancelled()
                result = archive_ref(self.sessions, path, repo, ref, new, self.pipeline_id, key)
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
        except archive_tags.RefsNotWritten as exc:
            # The log cannot be written, so no archive ref was made: the pipeline fails saying why.
            self.ctx.log(f"{exc}\n")
            self._step_end(step, models.FAILED, None, str(exc)[:500], t0)
            raise PipelineFailed(f"archive: {exc}") from exc
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
            if not result.ref.startswith((refs.HEADS, refs.TAGS)):
                self.ctx.log(f"\n{result.ref}: not built (only branches, and tags when the "
                             "pipeline file opts in, are built)\n")
                continue
            try:
                spec = self._read_pipeline_file(repo, result, prefix)
                if spec is None:
                    continue
                if refs.is_tag(result.ref) and not spec.build_tags:
                    self.ctx.log(f"{result.ref}: a tag; not built (add build_tags = true to "
                                 f"{pipelinefile.PIPELINE_FILE} to build tags)\n")
                    continue
                self._build(repo, result, spec.steps, prefix)
            except _Misconfigured:
                raise
            except PipelineFailed as exc:
                failures.append(f"{prefix}{exc}")
        if failures:
            raise PipelineFailed("; ".join(failures))

    def _sandbox_for_builds(self) -> workspaces.Sandbox:
        """This worker's sandbox, decided once per pipeline (and logged once)."""
        if self._sandbox is None:
            try:
                self._sandbox = workspaces.Sandbox.from_config(self.cfg)
            except workspaces.SandboxError as exc:  # a configuration problem the operator must fix
                self.ctx.log(f"{exc}\n")
                raise _Misconfigured(f"builds are misconfigured on this worker: {exc}") from exc
            self.ctx.log(f"{self._sandbox.describe()}\n")
        return self._sandbox

    def _build(self, repo: models.Repository, result: ArchiveResult, specs: list[pipelinefile.StepSpec],
               prefix: str) -> None:
        coords = build.Coordinates(
            repo=repo.full_name, ref=result.ref, commit=result.source_commit, tag=result.tag,
            readonly_url=http_clone_url(self.cfg.http_base_url, repo.tenant.name, repo.name))
        path = self.ctx.runtime.store.path(repo.tenant.name, repo.name)
        self._run_steps(coords, path, result.tag, specs, prefix)

    def _run_steps(self, coords: build.Coordinates, path: Path, clone_ref: str,
                   specs: list[pipelinefile.StepSpec], prefix: str) -> None:
        """Run ``specs``, each in a fresh clone of ``clone_ref`` of the repository at ``path``."""
        sandbox = self._sandbox_for_builds()
        for spec in specs:
            self.ctx.check_cancelled()
            self.ctx.check_released()
            step = self._step_start(_step_name(prefix, spec.name))
            t0 = time.monotonic()
            self.ctx.log(f"\n=== step {prefix}{spec.name}: {' '.join(spec.argv)}\n")
            try:
                workspace = workspaces.prepare_workspace(path, clone_ref, sandbox)
            except workspaces.SandboxError as exc:
                self.ctx.log(f"{exc}\n")
                self._step_end(step, models.FAILED, None, str(exc)[:500], t0)
                raise PipelineFailed(f"step {spec.name}: {exc}") from exc
            except Exception as exc:
                self._step_end(step, models.FAILED, None, f"{type(exc).__name__}: {exc}"[:500], t0)
                raise
            try:
                outcome = build.run_step(self.ctx, spec, workspace, coords, sandbox, self.variables)
            finally:
                workspaces.remove_workspace(workspace)
            if outcome.status == "released":
                self._step_end(step, models.QUEUED, outcome.exit_code, outcome.message, t0)
                raise jobs.JobReleased("worker shutting down")
            self._step_end(step, outcome.status, outcome.exit_code, outcome.message, t0)
            if outcome.status == models.CANCELLED:
                raise jobs.JobCancelled("cancelled during a build step")
            if outcome.status != models.SUCCEEDED:
                raise PipelineFailed(f"step {spec.name} failed: {outcome.message}")

    def _read_pipeline_file(self, repo: models.Repository, result: ArchiveResult,
                            prefix: str) -> pipelinefile.PipelineSpec | None:
        """The pipeline file of ``result``'s tree, parsed; None when there is none."""
        step = self._step_start(_step_name(prefix, "pipeline-file"))
        t0 = time.monotonic()
        git = pygit2.Repository(str(self.ctx.runtime.store.path(repo.tenant.name, repo.name)))
        try:
            data = read_blob(git, result.tree_id, pipelinefile.PIPELINE_FILE, pipelinefile.MAX_PIPELINE_FILE)
            if data is None:
                self.ctx.log(f"{prefix}no {pipelinefile.PIPELINE_FILE} in the pushed tree: nothing to build\n")
                self._step_end(step, models.SUCCEEDED, 0, "no pipeline file", t0)
                return None
            spec = pipelinefile.parse_pipeline(data.decode("utf-8"))
        except (ValueError, pipelinefile.PipelineFileError) as exc:
            message = str(exc) if isinstance(exc, pipelinefile.PipelineFileError) else (
                f"{pipelinefile.PIPELINE_FILE}: {exc}")
            self.ctx.log(f"{prefix}{message}\n")
            self._step_end(step, models.FAILED, None, message, t0)
            raise PipelineFailed(message) from exc
        skipped = refs.is_tag(result.ref) and not spec.build_tags
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
            live = [(u.ref, u.new) for u in ledger.live_updates(push)]
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
    outbox.enqueue_event(session, pipeline.repo_id, outbox.EVENT_PIPELINE, {"pipeline_id": pipeline.id})
