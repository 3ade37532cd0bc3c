"""Synchronous Repour runs hold a job lease (gitserver.repour.inline.InlineLease) on a real
database, SQLite and PostgreSQL: renewed while they run, cancellable, taken over by a worker's
ordinary claim once it expires, and never recorded twice."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import jobs
from gitserver.repour import gitwork, operations, records
from gitserver.repour import inline as repour_inline
from gitserver.repour import job as repour_job
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo, make_runtime

LEASE = 0.9


@pytest.fixture()
def runtime(db_url: str, tmp_path) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = make_runtime(db_url, tmp_path, {"GITSERVER_JOB_LEASE_SECONDS": str(LEASE)})
    yield rt
    rt.dispose()


def _held(rt: Runtime, task_id: str = "task-1") -> jobs.Claim:
    """What the /adjust resource does for a synchronous request: pipeline + held job."""
    with transaction(rt.sessions) as session:
        repo = add_repo(session)
        pipeline = records.create_pipeline(session, kind="adjust", repo_id=repo.id,
                                          spec={"ref": "main", "taskId": task_id}, status=models.RUNNING)
        return repour_inline.hold_inline(session, rt.config, op_name="adjust", pipeline_id=pipeline.id)


def _worker_claim(rt: Runtime, after: float = 0.0) -> jobs.Claim | None:
    with transaction(rt.sessions) as session:
        return jobs.claim(session, "worker-1", 30.0, now=utcnow() + dt.timedelta(seconds=after))


def _rows(rt: Runtime, claim: jobs.Claim) -> tuple[models.Pipeline, models.Job]:
    with transaction(rt.sessions) as session:
        pipeline = session.get(models.Pipeline, claim.pipeline_id)
        job = session.get(models.Job, claim.job_id)
        assert pipeline is not None and job is not None
        session.expunge_all()
        return pipeline, job


def test_held_job_is_leased_by_this_process_and_carries_no_request(runtime: Runtime) -> None:
    claim = _held(runtime)
    _pipeline, job = _rows(runtime, claim)
    assert (job.kind, job.status, job.attempts) == ("repour", "running", 1)
    assert job.lease_owner == repour_inline.api_owner() and job.lease_owner.startswith("api:")
    assert json.loads(job.payload) == {"op": "adjust", "mode": "inline", "max_attempts": 1}
    # Nobody else may claim it while the lease runs; once it has expired, a worker does.
    assert _worker_claim(runtime) is None
    assert _worker_claim(runtime, after=LEASE + 1) is not None


def test_heartbeat_renews_the_lease_while_the_request_runs(runtime: Runtime) -> None:
    claim = _held(runtime)
    lease = repour_inline.InlineLease(runtime.sessions, claim, LEASE)
    with lease:
        time.sleep(LEASE * 2.5)
        # Long past the first expiry: still held, so a worker finds nothing to take over.
        assert _worker_claim(runtime) is None
        lease()  # neither cancelled nor lost


def test_cancel_reaches_the_running_request(runtime: Runtime) -> None:
    claim = _held(runtime)
    with repour_inline.InlineLease(runtime.sessions, claim, LEASE, poll=0.1) as lease:
        with transaction(runtime.sessions) as session:
            pipeline = session.get(models.Pipeline, claim.pipeline_id)
            assert pipeline is not None and jobs.request_cancel(session, pipeline)
        deadline = time.monotonic() + 5
        with pytest.raises(jobs.JobCancelled):
            while time.monotonic() < deadline:
                lease()
                time.sleep(0.05)


def test_a_worker_takes_over_an_expired_request_and_fails_it(runtime: Runtime) -> None:
    claim = _held(runtime, task_id="dead")
    taken = _worker_claim(runtime, after=LEASE + 1)
    assert taken is not None and taken.job_id == claim.job_id and taken.attempts == 2
    ctx = jobs.JobContext(runtime=runtime, job_id=taken.job_id, kind=taken.kind, payload=taken.payload,
                          attempts=taken.attempts, pipeline_id=taken.pipeline_id)
    repour_job.run_repour_job(ctx)  # fails the pipeline, never re-runs the request
    pipeline, _job = _rows(runtime, claim)
    assert pipeline.status == "failed" and pipeline.finished_at is not None
    assert "stopped before it finished" in pipeline.error
    assert json.loads(pipeline.result)["error_type"] == "Interrupted"
    with transaction(runtime.sessions) as session:
        log, _ = jobs.read_log(session, pipeline.id, 0)
    assert b"stopped before it finished" in log


def test_takeover_of_a_cancelled_request_ends_it_cancelled(runtime: Runtime) -> None:
    claim = _held(runtime)
    with transaction(runtime.sessions) as session:
        pipeline = session.get(models.Pipeline, claim.pipeline_id)
        assert pipeline is not None
        jobs.request_cancel(session, pipeline)
    taken = _worker_claim(runtime, after=LEASE + 1)
    assert taken is not None
    repour_inline.take_over_inline(jobs.JobContext(runtime=runtime, job_id=taken.job_id, kind=taken.kind,
                                            payload=taken.payload, attempts=taken.attempts,
                                            pipeline_id=taken.pipeline_id))
    assert _rows(runtime, claim)[0].status == "cancelled"


@pytest.fixture()
def fake_adjust(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the adjust runner: each call runs the next queued action with the operation."""
    actions: list[Any] = []
    monkeypatch.setitem(operations.RUNNERS, "adjust", lambda op: actions.pop(0)(op))
    return actions


def test_run_inline_records_the_result_and_ends_the_job(runtime: Runtime, fake_adjust: list[Any]) -> None:
    claim = _held(runtime)
    fake_adjust.append(lambda op: {"tag": "1.0.redhat-00001", "commit": "c" * 40})
    status, body = repour_inline.run_inline(runtime, "adjust", {"ref": "main"}, gitwork.Actor(), claim)
    assert (status, body["tag"]) == (200, "1.0.redhat-00001")
    pipeline, job = _rows(runtime, claim)
    assert (pipeline.status, pipeline.archive_tag) == ("succeeded", "1.0.redhat-00001")
    assert (job.status, job.lease_owner) == ("succeeded", None)


def test_run_inline_that_lost_its_lease_leaves_the_pipeline_to_the_worker(
        runtime: Runtime, fake_adjust: list[Any]) -> None:
    """This process stalled past its lease (simulated: a worker claims it as expired, then runs
    its takeover while the request still runs): the request stops with 503 and the worker's
    verdict stands."""
    claim = _held(runtime)

    def stalled(op: operations.Operation) -> dict[str, Any]:
        taken = _worker_claim(runtime, after=LEASE + 1)
        assert taken is not None
        repour_job.run_repour_job(jobs.JobContext(runtime=runtime, job_id=taken.job_id, kind=taken.kind,
                                              payload=taken.payload, attempts=taken.attempts,
                                              pipeline_id=taken.pipeline_id))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            op.stop()  # raises JobReleased once the heartbeat finds the lease gone
            time.sleep(0.05)
        raise AssertionError("the lost lease was never noticed")

    fake_adjust.append(stalled)
    status, body = repour_inline.run_inline(runtime, "adjust", {"ref": "main"}, gitwork.Actor(), claim)
    assert status == 503 and body["error_type"] == "LeaseLost"
    pipeline, job = _rows(runtime, claim)
    assert pipeline.status == "failed" and "stopped before it finished" in pipeline.error
    assert job.lease_owner == "worker-1"  # the worker's, untouched by the stalled request


def test_run_inline_cancelled(runtime: Runtime, fake_adjust: list[Any]) -> None:
    claim = _held(runtime, task_id="t-9")

    def cancelled(op: operations.Operation) -> dict[str, Any]:
        with transaction(runtime.sessions) as session:
            pipeline = session.get(models.Pipeline, claim.pipeline_id)
            assert pipeline is not None
            jobs.request_cancel(session, pipeline)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            op.stop()
            time.sleep(0.05)
        raise AssertionError("the cancel was never noticed")

    fake_adjust.append(cancelled)
    status, body = repour_inline.run_inline(runtime, "adjust", {"ref": "main", "taskId": "t-9"}, gitwork.Actor(), claim)
    assert status == 400 and body["error_type"] == "Cancelled" and "t-9" in body["desc"]
    pipeline, job = _rows(runtime, claim)
    assert (pipeline.status, job.status, job.lease_owner) == ("cancelled", "cancelled", None)
    with transaction(runtime.sessions) as session:
        assert session.scalar(select(models.Job.id).where(models.Job.status == models.RUNNING)) is None
