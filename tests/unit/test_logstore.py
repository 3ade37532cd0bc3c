"""Pipeline logs as stored data (issue 21, finding 6): their bytes in the quotas, a log cut
when its repository is over quota, and the retention pass. On both databases."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import jobs, logstore
from gitserver.push import limits
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo


def _pipeline(session, repo_id: int, ended_days_ago: float | None = None) -> int:  # type: ignore[no-untyped-def]
    finished = None if ended_days_ago is None else utcnow() - dt.timedelta(days=ended_days_ago)
    pipeline = models.Pipeline(repo_id=repo_id, status=models.SUCCEEDED if finished else models.RUNNING,
                               finished_at=finished)
    session.add(pipeline)
    session.flush()
    session.add(models.Step(pipeline_id=pipeline.id, position=0, name="build"))
    session.add(models.LogChunk(pipeline_id=pipeline.id, offset=0, data=b"x" * 100))
    session.flush()
    return pipeline.id


def _ctx(rt: Runtime, pid: int) -> jobs.JobContext:
    return jobs.JobContext(runtime=rt, job_id=0, kind="pipeline", payload={}, attempts=1, pipeline_id=pid)


def _chunks(rt: Runtime, pid: int) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).where(models.LogChunk.pipeline_id == pid)) or 0)


def test_log_bytes_are_summed_per_repository_and_tenant(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        other = models.Repository(tenant_id=repo.tenant_id, name="other")
        session.add(other)
        session.flush()
        _pipeline(session, repo.id)
        _pipeline(session, repo.id, ended_days_ago=1)
        _pipeline(session, other.id)
        assert logstore.repo_log_bytes(session, repo.id) == 200
        assert logstore.tenant_log_bytes(session, repo.tenant_id) == 300
        assert logstore.held_bytes(session, repo) == (0, 0)  # no quota: nothing summed
        repo.quota_bytes = 10**6
        assert logstore.held_bytes(session, repo) == (200, 0)


def test_prune_deletes_old_logs_in_batches_and_keeps_pipelines(runtime: Runtime,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logstore, "PRUNE_BATCH", 2)
    monkeypatch.setattr(logstore, "PRUNE_MAX_BATCHES", 2)
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        old = [_pipeline(session, repo.id, ended_days_ago=10) for _ in range(5)]
        recent = _pipeline(session, repo.id, ended_days_ago=1)
        running = _pipeline(session, repo.id)
    assert logstore.prune(runtime.sessions, 0) == 0  # 0 keeps every log
    assert logstore.prune(runtime.sessions, 7) == 4  # bounded: two batches of two
    assert logstore.prune(runtime.sessions, 7) == 1
    assert logstore.prune(runtime.sessions, 7) == 0
    assert [_chunks(runtime, pid) for pid in old] == [0] * 5
    assert _chunks(runtime, recent) == _chunks(runtime, running) == 1
    with transaction(runtime.sessions) as session:
        pruned = session.get(models.Pipeline, old[0])
        assert pruned is not None and pruned.log_pruned_at is not None and len(pruned.steps) == 1
        assert session.get(models.Pipeline, recent).log_pruned_at is None  # type: ignore[union-attr]


def test_a_log_is_cut_with_one_line_when_the_repository_is_over_quota(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        repo.quota_bytes = 1000
        pid = _pipeline(session, repo.id)  # 100 bytes of log already
    ctx = _ctx(runtime, pid)
    ctx.log(b"a" * 500)
    ctx.log(b"b" * 500)  # 100 + 500 + 500 > 1000: only 400 of these fit
    ctx.log(b"c" * 10)  # after the cut nothing more is written
    with transaction(runtime.sessions) as session:
        data, _ = jobs.read_log(session, pid, 0)
    cut = b"\n*** log cut: repository over its quota (1000 bytes); later output is discarded\n"
    assert data == b"x" * 100 + b"a" * 500 + b"b" * 400 + cut


def test_a_log_is_cut_when_the_tenant_is_over_quota(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        repo.tenant.quota_bytes = 50  # already over with its 100 bytes of log
        pid = _pipeline(session, repo.id)
    _ctx(runtime, pid).log(b"more")
    with transaction(runtime.sessions) as session:
        data, _ = jobs.read_log(session, pid, 0)
    assert data == b"x" * 100 + b"\n*** log cut: tenant over its quota (50 bytes); later output is discarded\n"


def test_a_log_without_quotas_is_not_cut(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        pid = _pipeline(session, add_repo(session).id)
    _ctx(runtime, pid).log(b"y" * 5000)
    assert _chunks(runtime, pid) == 2


def test_the_push_check_counts_log_bytes_in_both_quotas(tmp_path: Path) -> None:
    quarantine = tmp_path / "repo.git" / "objects" / "tmp_objdir-incoming-x"
    quarantine.mkdir(parents=True)
    (quarantine / "pack").write_bytes(b"p" * 10)
    held = limits.PushLimits(repo_quota_bytes=1000, repo_log_bytes=995)
    assert limits.PushLimits.from_env(held.to_env()) == held  # the hook gets them too
    measured = limits.measure(held, quarantine, tmp_path / "repo.git")
    assert measured.repo_bytes >= 995
    assert "quota_bytes of repository" in (limits.over_limit(held, measured, repo="t/r") or "")
    tenant = limits.PushLimits(tenant_quota_bytes=1000, tenant_log_bytes=995)
    assert "quota_bytes of tenant" in (limits.over_limit(
        tenant, limits.measure(tenant, quarantine, tmp_path / "repo.git"), tenant="t") or "")


def test_the_worker_monitor_runs_the_retention_pass(db_url: str, tmp_path: Path) -> None:
    import threading

    from gitserver.cmd.wiring import job_handlers
    from gitserver.pipelines.worker import Worker
    from tests.conftest import wait_for
    from tests.unit.conftest import make_runtime

    rt = make_runtime(db_url, tmp_path, job_reconcile_interval=0.1, pipeline_log_retention_days=7)
    try:
        with transaction(rt.sessions) as session:
            pid = _pipeline(session, add_repo(session).id, ended_days_ago=8)
        worker = Worker(rt, 1, job_handlers())
        monitor = threading.Thread(target=worker._monitor, daemon=True)
        monitor.start()
        try:
            wait_for(lambda: _chunks(rt, pid) == 0, timeout=10, what="the old log pruned")
        finally:
            worker.stop()
            monitor.join(5)
    finally:
        rt.dispose()
