"""The durable queue under stress and failure: concurrent pushes, a worker killed with SIGKILL
mid-build, a worker stopped with SIGTERM, pushes whose pipeline was lost."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gitserver.db import models
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, commit_files, make_repo, start_server
from tests.functional.test_pipelines import push, pushed_pipeline_id, wait_pipeline
from tests.functional.test_pipelines_build import processes_with


def test_twenty_concurrent_pushes_twenty_pipelines_each_run_once(
        server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "work", git_env)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    server.git(user, "push", "origin", "main", cwd=work)
    for i in range(20):
        subprocess.run(["git", "checkout", "-q", "-b", f"b{i}", "main"], cwd=work, env=git_env, check=True)
        commit_files(work, git_env, {f"file{i}.txt": f"{i}\n"})

    def push_branch(i: int) -> int:
        result = server.git(user, "push", "origin", f"b{i}", cwd=work)
        return pushed_pipeline_id(result.stderr)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(push_branch, range(20)))
    assert len(set(ids)) == 20
    pipelines = [wait_pipeline(server, pid, timeout=120) for pid in ids]
    assert [p.status for p in pipelines] == ["succeeded"] * 20
    assert len({p.archive_tag for p in pipelines}) == 20  # 20 different trees, 20 tags
    def final_jobs() -> list[models.Job] | None:
        # The pipeline's verdict and its job row's are two transactions of the worker (the
        # handler writes the first, the job engine the second): wait for the job rows too.
        with server.db() as session:
            found = session.scalars(select(models.Job).where(models.Job.pipeline_id.in_(ids))).all()
            return found if all(j.status in models.FINAL_STATES for j in found) else None

    jobs = wait_for(final_jobs, timeout=30, what="the 20 job rows to be final")
    # One job each, claimed once (attempts == 1): nothing was run twice.
    assert sorted(j.pipeline_id for j in jobs) == sorted(ids)
    assert {(j.status, j.attempts) for j in jobs} == {("succeeded", 1)}
    with server.db() as session:
        archives = session.scalars(select(models.Archive).where(models.Archive.pipeline_id.in_(ids))).all()
        assert len(archives) == 20


@pytest.fixture()
def split_server(tmp_path: Path, db_url: str, git_env: dict[str, str]) -> Iterator[GitServer]:
    """ssh + api + one worker as separate processes, with short leases."""
    srv = start_server(tmp_path, db_url, git_env, parts=("ssh", "api", "worker"),
                       extra_env={"GITSERVER_WORKERS": "1", "GITSERVER_JOB_LEASE_SECONDS": "2",
                                  "GITSERVER_JOB_SHUTDOWN_GRACE": "1",
                                  "GITSERVER_JOB_RECONCILE_INTERVAL": "1"})
    try:
        yield srv
    finally:
        srv.stop()


def _build_repo(srv: GitServer, git_env: dict[str, str], tmp_path: Path, command: str,
                env: str = "") -> tuple[str, str, object, Path]:
    tenant = srv.new_tenant()
    user = srv.new_user(tenant, role="admin")
    repo = srv.new_repo(tenant, builds=True)
    toml = f'[[steps]]\nname = "build"\ncommand = "{command}"\n'
    if env:
        name, value = env.split("=", 1)
        toml += f'env = {{ {name} = "{value}" }}\n'
    work = make_repo(tmp_path / "work", git_env, {".gitserver/pipeline.toml": toml, "a.txt": "a\n"})
    srv.git(user, "remote", "add", "origin", srv.repo_url(tenant, repo), cwd=work)
    return tenant, repo, user, work


def _log(srv: GitServer, pid: int) -> str:
    with srv.db() as session:
        chunks = session.scalars(select(models.LogChunk).where(models.LogChunk.pipeline_id == pid)
                                 .order_by(models.LogChunk.offset)).all()
        return b"".join(c.data for c in chunks).decode()


def test_worker_sigkill_mid_build_pipeline_completes_on_another_worker(
        split_server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    srv = split_server
    marker = f"GS_TEST_MARKER={os.getpid()}{time.monotonic_ns()}"
    _t, _r, user, work = _build_repo(srv, git_env, tmp_path, "echo STARTED; sleep 3; echo FINISHED",
                                     env=marker)
    pid = push(srv, user, work, "main")  # type: ignore[arg-type]
    wait_for(lambda: "\nSTARTED\n" in _log(srv, pid), timeout=30, interval=0.1, what="the build to start")
    os.kill(srv.procs["worker"].pid, signal.SIGKILL)
    srv.procs["worker"].wait()
    if os.geteuid() == 0:
        # The killed worker's build dies with it (parent-death signal, PID namespace).
        wait_for(lambda: not processes_with(marker), timeout=5,
                 what="the dead worker's build step to be killed")
    srv.procs["worker2"] = srv.spawn("worker")
    pipeline = wait_pipeline(srv, pid, timeout=60)
    log = _log(srv, pid)
    assert pipeline.status == "succeeded", log
    assert "*** attempt 2" in log and log.count("\nFINISHED\n") == 1 and pipeline.archive_tag
    # The handler finishes the pipeline, then the worker finishes the job row in its own
    # transaction: wait for that second write rather than racing it.
    def job_state() -> tuple[str, int] | None:
        with srv.db() as session:
            job = session.scalar(select(models.Job).where(models.Job.pipeline_id == pid))
            return (job.status, job.attempts) if job is not None else None

    wait_for(lambda: job_state() == ("succeeded", 2), timeout=10, interval=0.1,
             what="the job to be marked succeeded on its second attempt")
    with srv.db() as session:
        steps = session.scalars(select(models.Step).where(models.Step.pipeline_id == pid)).all()
        assert [(s.name, s.status) for s in steps] == [
            ("archive", "succeeded"), ("pipeline-file", "succeeded"), ("build", "succeeded")]


def test_worker_sigterm_releases_job_and_reconciler_queues_lost_pushes(
        split_server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    srv = split_server
    _tenant, _repo, user, work = _build_repo(srv, git_env, tmp_path, "echo STARTED; sleep 600")
    pid = push(srv, user, work, "main")  # type: ignore[arg-type]
    wait_for(lambda: "\nSTARTED\n" in _log(srv, pid), timeout=30, interval=0.1, what="the build to start")
    worker = srv.procs["worker"]
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=15) == 0  # grace 1 s, then release: well before the lease matters
    with srv.db() as session:
        job = session.scalar(select(models.Job).where(models.Job.pipeline_id == pid))
        assert job is not None and (job.status, job.lease_owner, job.attempts) == ("queued", None, 0)
        assert session.get(models.Pipeline, pid).status == "queued"  # type: ignore[union-attr]
    assert "shutting down" in _log(srv, pid)

    # A push recorded without its pipeline (as if the process died in between): the
    # reconciler of the next worker queues one.
    commit = commit_files(work, git_env, {".gitserver/pipeline.toml": '[[steps]]\nname = "quick"\ncommand = "true"\n'})
    srv.git(user, "push", "origin", "main:refs/heads/side", cwd=work)  # type: ignore[arg-type]
    with srv.db() as session:
        side = session.scalar(select(models.Pipeline).where(models.Pipeline.commit == commit))
        assert side is not None
        push_id = side.push_id
        for j in session.scalars(select(models.Job).where(models.Job.pipeline_id == side.id)):
            session.delete(j)
        session.delete(side)
        session.get(models.Push, push_id).created_at -= dt.timedelta(minutes=1)  # type: ignore[union-attr]

    # With no worker running, a queued pipeline is cancelled by the API itself, at once.
    commit_files(work, git_env, {"c.txt": "c\n"})
    queued = pushed_pipeline_id(srv.git(user, "push", "origin", "main:refs/heads/queued", cwd=work).stderr)  # type: ignore[arg-type]
    response = srv.api("POST", f"/api/v1/pipelines/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None

    srv.procs["worker2"] = srv.spawn("worker")
    # The released job runs again on the new worker; cancel it so the test need not wait 600 s.
    wait_for(lambda: _log(srv, pid).count("\nSTARTED\n") == 2, timeout=30, interval=0.1,
             what="the released pipeline to run again")
    assert srv.api("POST", f"/api/v1/pipelines/{pid}/cancel").status_code == 202
    assert wait_pipeline(srv, pid, timeout=10).status == "cancelled"

    def reconciled() -> models.Pipeline | None:
        with srv.db() as session:
            row = session.scalar(select(models.Pipeline).where(models.Pipeline.push_id == push_id))
            if row is not None:
                session.expunge(row)
            return row

    again = wait_for(reconciled, timeout=30, interval=0.2, what="the reconciler to queue the lost push")
    final = wait_pipeline(srv, again.id, timeout=60)
    assert final.commit == commit and final.archive_tag
    with srv.db() as session:  # the cancelled one was never run
        assert session.get(models.Pipeline, queued).started_at is None  # type: ignore[union-attr]
    assert json.loads(final.result)["archives"][0]["ref"] == "refs/heads/side"
