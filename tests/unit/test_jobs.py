"""The job queue (gitserver.pipelines.jobs) on a real database, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import jobs
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo


def _pipeline(rt: Runtime) -> int:
    with transaction(rt.sessions) as session:
        repo = add_repo(session)
        pipeline = models.Pipeline(repo_id=repo.id, ref="refs/heads/main", commit="0" * 40)
        session.add(pipeline)
        session.flush()
        return pipeline.id


def _claim(rt: Runtime, owner: str = "w1", lease: float = 30.0,
           now: dt.datetime | None = None) -> jobs.Claim | None:
    with transaction(rt.sessions) as session:
        return jobs.claim(session, owner, lease, now=now)


def test_enqueue_refuses_unknown_kind(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session, pytest.raises(ValueError, match="unknown job kind 'nope'"):
        jobs.enqueue(session, "nope", {})


def test_claim_takes_oldest_once_and_respects_run_after(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        later = jobs.enqueue(session, "webhook", {"n": 2}, run_after=utcnow() + dt.timedelta(hours=1))
        first = jobs.enqueue(session, "webhook", {"n": 1})
    claim = _claim(runtime)
    assert claim is not None and claim.job_id == first.id and claim.payload == {"n": 1}
    assert claim.attempts == 1 and claim.kind == "webhook"
    assert _claim(runtime, "w2") is None  # the other one is not due yet
    with transaction(runtime.sessions) as session:
        assert jobs.finish(session, claim, models.SUCCEEDED)
    # An hour later it is.
    later_claim = _claim(runtime, "w2", now=utcnow() + dt.timedelta(hours=2))
    assert later_claim is not None and later_claim.job_id == later.id


def test_expired_lease_is_reclaimed_and_old_owner_cannot_finish(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        job = jobs.enqueue(session, "webhook", {})
    dead = _claim(runtime, "dead-worker", lease=1.0)
    assert dead is not None
    assert _claim(runtime, "w2") is None  # lease still valid
    taker = _claim(runtime, "w2", now=utcnow() + dt.timedelta(seconds=5))
    assert taker is not None and taker.job_id == job.id and taker.attempts == 2
    with transaction(runtime.sessions) as session:
        assert jobs.renew(session, [dead], 30.0) == set()
        assert not jobs.finish(session, dead, models.FAILED, "late")
        assert jobs.finish(session, taker, models.SUCCEEDED)
        row = session.get(models.Job, job.id)
        assert row is not None and row.status == models.SUCCEEDED and row.lease_owner is None


def test_retry_backs_off_then_fails_after_max_attempts(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        job = jobs.enqueue(session, "webhook", {"max_attempts": 2})
    claim = _claim(runtime)
    assert claim is not None
    with transaction(runtime.sessions) as session:
        assert jobs.retry(session, claim, 60, "receiver down") == models.QUEUED
    assert _claim(runtime) is None  # not before the delay
    again = _claim(runtime, now=utcnow() + dt.timedelta(seconds=61))
    assert again is not None and again.attempts == 2
    with transaction(runtime.sessions) as session:
        assert jobs.retry(session, again, 60, "still down") == models.FAILED
        row = session.get(models.Job, job.id)
        assert row is not None and row.status == models.FAILED
        assert "gave up after 2 attempts: still down" in row.last_error


def test_release_requeues_without_counting_the_attempt(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        jobs.enqueue(session, "webhook", {})
    claim = _claim(runtime)
    assert claim is not None
    with transaction(runtime.sessions) as session:
        assert jobs.release(session, claim)
    again = _claim(runtime, "w2")
    assert again is not None and again.job_id == claim.job_id and again.attempts == 1


def test_cancel_of_queued_and_running_pipelines(runtime: Runtime) -> None:
    pid = _pipeline(runtime)
    with transaction(runtime.sessions) as session:
        job = jobs.enqueue(session, "pipeline", {"pipeline_id": pid}, pipeline_id=pid)
        pipeline = session.get(models.Pipeline, pid)
        assert pipeline is not None and jobs.request_cancel(session, pipeline)
        assert pipeline.status == models.CANCELLED
    with transaction(runtime.sessions) as session:
        assert session.get(models.Job, job.id).status == models.CANCELLED  # type: ignore[union-attr]
    assert _claim(runtime) is None
    # Running: the job is flagged, its worker sees it through cancel_requested().
    pid2 = _pipeline_in_same_repo(runtime)
    with transaction(runtime.sessions) as session:
        job2 = jobs.enqueue(session, "pipeline", {"pipeline_id": pid2}, pipeline_id=pid2)
    claim = _claim(runtime)
    assert claim is not None and claim.job_id == job2.id
    with transaction(runtime.sessions) as session:
        session.get(models.Pipeline, pid2).status = models.RUNNING  # type: ignore[union-attr]
    with transaction(runtime.sessions) as session:
        assert jobs.cancel_requested(session, [job2.id]) == set()
        assert jobs.request_cancel(session, session.get(models.Pipeline, pid2))  # type: ignore[arg-type]
        assert jobs.cancel_requested(session, [job2.id]) == {job2.id}
    ctx = jobs.JobContext(runtime=runtime, job_id=job2.id, kind="pipeline", payload={}, attempts=1,
                          pipeline_id=pid2)
    with pytest.raises(jobs.JobCancelled):
        ctx.check_cancelled()


def _pipeline_in_same_repo(rt: Runtime) -> int:
    with transaction(rt.sessions) as session:
        repo_id = session.scalars(select(models.Repository.id)).first()
        pipeline = models.Pipeline(repo_id=repo_id, ref="refs/heads/x", commit="1" * 40)
        session.add(pipeline)
        session.flush()
        return pipeline.id


def test_log_appends_and_reads_from_offset(runtime: Runtime) -> None:
    pid = _pipeline(runtime)
    ctx = jobs.JobContext(runtime=runtime, job_id=0, kind="pipeline", payload={}, attempts=1,
                          pipeline_id=pid)
    ctx.log("hello ")
    ctx.log(b"world\n")
    ctx.log("é" * (jobs.MAX_LOG_CHUNK))  # split across rows
    with transaction(runtime.sessions) as session:
        data, nxt = jobs.read_log(session, pid, 0)
        assert data.startswith(b"hello world\n") and nxt == len(data) == 12 + 2 * jobs.MAX_LOG_CHUNK
        tail, nxt2 = jobs.read_log(session, pid, 6)
        assert tail.startswith(b"world\n") and nxt2 == nxt
        assert jobs.read_log(session, pid, nxt) == (b"", nxt)
        # A second context (another attempt, another worker) continues at the end.
    ctx2 = jobs.JobContext(runtime=runtime, job_id=0, kind="pipeline", payload={}, attempts=2,
                           pipeline_id=pid)
    ctx2.log("more")
    with transaction(runtime.sessions) as session:
        assert jobs.read_log(session, pid, nxt) == (b"more", nxt + 4)
        assert json.loads(json.dumps(jobs.log_end(session, pid))) == nxt + 4


def test_repair_fails_pipelines_whose_job_ended_without_a_verdict(runtime: Runtime) -> None:
    from gitserver.pipelines.repair import repair_orphaned_pipelines

    orphan, busy, recent = _pipeline(runtime), _pipeline_in_same_repo(runtime), _pipeline_in_same_repo(runtime)
    long_ago = utcnow() - dt.timedelta(minutes=5)
    with transaction(runtime.sessions) as session:
        for pid, status, updated in ((orphan, models.FAILED, long_ago), (busy, models.RUNNING, long_ago),
                                     (recent, models.FAILED, utcnow())):
            session.get(models.Pipeline, pid).status = models.RUNNING  # type: ignore[union-attr]
            job = jobs.enqueue(session, "pipeline", {"pipeline_id": pid}, pipeline_id=pid)
            job.status = status
            session.flush()
            session.execute(models.Job.__table__.update().where(models.Job.id == job.id)
                            .values(updated_at=updated))
    assert repair_orphaned_pipelines(runtime) == 1
    with transaction(runtime.sessions) as session:
        states = {pid: session.get(models.Pipeline, pid).status for pid in (orphan, busy, recent)}  # type: ignore[union-attr]
    assert states == {orphan: models.FAILED, busy: models.RUNNING, recent: models.RUNNING}


def test_enqueue_wakes_idle_workers_on_postgresql(runtime: Runtime) -> None:
    import threading
    import time

    from gitserver.cmd.wiring import job_handlers
    from gitserver.pipelines.worker import Worker

    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    worker = Worker(runtime, 1, job_handlers())
    listener = threading.Thread(target=worker._listen, daemon=True)
    listener.start()
    try:
        time.sleep(0.5)  # let it LISTEN
        worker.wake.clear()
        with transaction(runtime.sessions) as session:
            jobs.enqueue(session, "webhook", {})
            assert not worker.wake.is_set()  # delivered at commit, not before
        assert worker.wake.wait(2.0)
    finally:
        worker.stop()
        listener.join(5)


def test_read_log_loads_only_the_window_it_returns(runtime: Runtime) -> None:
    """A log reader (anonymous, for a public repository) asking for offset 0 of a huge log must
    not make the API process load the whole log from the database to send 1 MiB of it."""
    pid = _pipeline(runtime)
    ctx = jobs.JobContext(runtime=runtime, job_id=0, kind="pipeline", payload={}, attempts=1,
                          pipeline_id=pid)
    ctx.log(b"x" * (40 * jobs.MAX_LOG_CHUNK))
    loaded: list[int] = []
    with transaction(runtime.sessions) as session:
        real_execute = session.execute

        def spying_execute(statement, *args, **kwargs):  # type: ignore[no-untyped-def]
            result = real_execute(statement, *args, **kwargs)
            rows = result.all()
            loaded.append(sum(len(bytes(row[1])) for row in rows if len(row) > 1))

            class _Rows:
                def all(self) -> list:  # type: ignore[type-arg]
                    return rows
            return _Rows()

        session.execute = spying_execute  # type: ignore[method-assign]
        data, nxt = jobs.read_log(session, pid, 0, 2 * jobs.MAX_LOG_CHUNK)
    assert data == b"x" * (2 * jobs.MAX_LOG_CHUNK) and nxt == 2 * jobs.MAX_LOG_CHUNK
    assert sum(loaded) <= 3 * jobs.MAX_LOG_CHUNK, f"loaded {sum(loaded)} bytes to return {len(data)}"


def test_log_stops_growing_at_the_cap_and_says_so(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pushed build step that prints without end (``yes``) must not fill the database: past
    MAX_LOG_BYTES the log says it was truncated and keeps nothing more."""
    monkeypatch.setattr(jobs, "MAX_LOG_BYTES", 100)
    pid = _pipeline(runtime)
    ctx = jobs.JobContext(runtime=runtime, job_id=0, kind="pipeline", payload={}, attempts=1,
                          pipeline_id=pid)
    ctx.log(b"a" * 60)
    ctx.log(b"b" * 60)
    ctx.log(b"c" * 60)
    with transaction(runtime.sessions) as session:
        data, _ = jobs.read_log(session, pid, 0)
    assert data.startswith(b"a" * 60 + b"b" * 40 + b"\n")
    assert data == b"a" * 60 + b"b" * 40 + jobs.LOG_TRUNCATED


def test_kinds_are_stored_and_shown_as_their_plain_names() -> None:
    # Job.kind and Pipeline.kind rows written before these were enums hold these strings.
    assert list(jobs.KINDS) == ["pipeline", "webhook", "callback", "repour", "maintain"]
    assert [str(k) for k in models.PipelineKind] == ["push", "clone", "adjust", "create"]
    assert json.dumps({"kind": jobs.JobKind.MAINTAIN}) == '{"kind": "maintain"}'
