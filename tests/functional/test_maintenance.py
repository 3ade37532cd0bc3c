"""Repository maintenance through the real ``gitserver serve``, real git and OpenSSH, on SQLite
and PostgreSQL: many pushes queue one ``maintain`` job; when it runs the repository has fewer
packs, a bitmap and a commit-graph, and every ref, archive tag and object is still served;
a push running beside ``gitserver maintain`` loses nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server

FINAL = ("succeeded", "failed", "cancelled")
SETTINGS = {
    "GITSERVER_MAINTENANCE_MAX_PACKS": "2",
    "GITSERVER_MAINTENANCE_MAX_LOOSE_OBJECTS": "0",
    # Long enough that the job waits for the test to look at it; the test then makes it due.
    "GITSERVER_MAINTENANCE_DELAY": "3600",
}


@pytest.fixture()
def srv(db_url: str, git_env: dict[str, str], tmp_path: Path) -> Any:
    server = start_server(tmp_path, db_url, git_env, extra_env=SETTINGS)
    try:
        yield server
    finally:
        server.stop()


def setup_repo(srv: GitServer, git_env: dict[str, str], tmp_path: Path, name: str) -> tuple[User, str, str, Path]:
    tenant = srv.new_tenant()
    user = srv.new_user(tenant)
    repo = srv.new_repo(tenant, name, grants={user.name: "write"})
    # Every push keeps its pack (as pushes of more than 100 objects do), so a few small
    # pushes make a repository with many packs.
    subprocess.run(["git", "--git-dir", str(srv.repo_path(tenant, repo)), "config", "receive.unpackLimit", "1"],
                   check=True, env=git_env)
    work = make_repo(tmp_path / f"work-{name}", git_env, {"README.md": f"{name}\n"})
    srv.git(user, "remote", "add", "origin", srv.repo_url(tenant, repo), cwd=work)
    return user, tenant, repo, work


def push(srv: GitServer, user: User, work: Path, refspec: str) -> int:
    """Push; the id of the pipeline the server queued."""
    stderr = srv.git(user, "push", "origin", refspec, cwd=work).stderr
    for line in stderr.splitlines():
        if "pipeline " in line and " queued: " in line:
            return int(line.split("pipeline ", 1)[1].split()[0])
    raise AssertionError(f"no pipeline line in push output:\n{stderr}")


def wait_pipeline(srv: GitServer, pipeline_id: int) -> str:
    def done() -> str | None:
        status = srv.api("GET", f"/api/v1/pipelines/{pipeline_id}").json().get("status")
        return status if status in FINAL else None

    return str(wait_for(done, timeout=120, interval=0.2, what=f"pipeline {pipeline_id}\n{srv.logs()}"))


def served(srv: GitServer, user: User, tenant: str, repo: str, tmp_path: Path, label: str) -> tuple[str, str]:
    """What a client sees: ls-remote, and every object of a full mirror clone (fsck'd)."""
    refs = srv.git(user, "ls-remote", srv.repo_url(tenant, repo)).stdout
    mirror = tmp_path / f"mirror-{label}"
    srv.git(user, "clone", "-q", "--mirror", srv.repo_url(tenant, repo), str(mirror))
    srv.git(user, "--git-dir", str(mirror), "fsck", "--full", "--strict")
    objects = srv.git(user, "--git-dir", str(mirror), "rev-list", "--all", "--objects").stdout
    return refs, "\n".join(sorted(objects.splitlines()))


def pack_files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "objects" / "pack").iterdir())


def maintain_jobs(srv: GitServer) -> list[tuple[int, str, str]]:
    from gitserver.db import models

    with srv.db() as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            select(models.Job.id, models.Job.status, models.Job.last_error)
            .where(models.Job.kind == "maintain").order_by(models.Job.id))]


def check_passes(srv: GitServer) -> None:
    result = srv.cli("check", check=False)
    assert result.returncode == 0, f"gitserver check:\n{result.stdout}{result.stderr}"


def test_pushes_queue_one_job_that_repacks_and_everything_is_served_the_same(
        srv: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    from gitserver.db import models

    user, tenant, repo, work = setup_repo(srv, git_env, tmp_path, "many")
    path = srv.repo_path(tenant, repo)
    for i in range(6):
        commit_files(work, git_env, {f"f{i}.txt": f"{i}\n"}, f"change {i}")
        assert wait_pipeline(srv, push(srv, user, work, f"HEAD:refs/heads/b{i}")) == "succeeded"
    packs_before = [n for n in pack_files(path) if n.endswith(".pack")]
    assert len(packs_before) >= 6, packs_before

    # Four pushes found the repository over the threshold; one job was queued.
    queued = maintain_jobs(srv)
    assert [status for _id, status, _e in queued] == ["queued"], queued

    refs_before, objects_before = served(srv, user, tenant, repo, tmp_path, "before")
    assert "refs/tags/repour-" in refs_before  # the archive tags are among what must survive
    check_passes(srv)

    # The delay has passed (it stands for the end of a burst of pushes): a worker runs it.
    with srv.db() as session:
        session.execute(update(models.Job).where(models.Job.id == queued[0][0])
                        .values(run_after=models.Job.created_at))

    def finished() -> tuple[int, str, str] | None:
        rows = maintain_jobs(srv)
        return rows[0] if rows and rows[0][1] in FINAL else None

    job = wait_for(finished, timeout=120, interval=0.2, what=f"maintain job\n{srv.logs()}")
    assert job[1] == "succeeded", job

    files = pack_files(path)
    assert len([n for n in files if n.endswith(".pack")]) < len(packs_before), files
    assert "multi-pack-index" in files and any(n.endswith(".bitmap") for n in files), files
    assert (path / "objects" / "info" / "commit-graphs" / "commit-graph-chain").is_file()
    assert served(srv, user, tenant, repo, tmp_path, "after") == (refs_before, objects_before)
    check_passes(srv)

    # Once it has run, the next push over the threshold may queue the next one.
    with srv.db() as session:
        session.execute(update(models.Job).where(models.Job.kind == "maintain")
                        .values(status="succeeded"))
    for i in range(3):
        commit_files(work, git_env, {f"g{i}.txt": f"{i}\n"}, f"more {i}")
        assert wait_pipeline(srv, push(srv, user, work, f"HEAD:refs/heads/c{i}")) == "succeeded"
    assert [status for _id, status, _e in maintain_jobs(srv)] == ["succeeded", "queued"]


def test_a_push_beside_gitserver_maintain_loses_nothing(srv: GitServer, git_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    user, tenant, repo, work = setup_repo(srv, git_env, tmp_path, "busy")
    pipelines = []
    for i in range(8):
        commit_files(work, git_env, {f"f{i}.txt": f"{i}\n" * 200}, f"change {i}")
        pipelines.append(push(srv, user, work, f"HEAD:refs/heads/b{i}"))
    for pipeline_id in pipelines:
        assert wait_pipeline(srv, pipeline_id) == "succeeded"

    maintain = subprocess.Popen([srv.python, "-m", "gitserver", "maintain", f"{tenant}/{repo}"], env=srv.env,
                                cwd=srv.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tips = {}
    try:
        for i in range(4):  # whether these overlap the repack or not, none may be lost
            tips[f"refs/heads/p{i}"] = commit_files(work, git_env, {f"p{i}.txt": f"{i}\n"}, f"beside {i}")
            pipelines.append(push(srv, user, work, f"HEAD:refs/heads/p{i}"))
    finally:
        out, err = maintain.communicate(timeout=300)
    assert maintain.returncode == 0, err
    assert out.startswith(f"{tenant}/{repo}: packs "), out
    assert "bitmap yes, commit-graph yes" in out, out
    for pipeline_id in pipelines:
        assert wait_pipeline(srv, pipeline_id) == "succeeded"

    refs, _objects = served(srv, user, tenant, repo, tmp_path, "after")
    listed = {ref: oid for oid, ref in (line.split("\t") for line in refs.splitlines())}
    assert all(listed.get(ref) == oid for ref, oid in tips.items()), (tips, refs)
    assert len([r for r in listed if r.startswith("refs/tags/repour-")]) >= len(tips)
    check_passes(srv)
    # ... and maintenance again, by hand, with nothing new: still everything served.
    again = srv.cli("maintain", f"{tenant}/{repo}")
    assert "bitmap yes" in again.stdout
    assert served(srv, user, tenant, repo, tmp_path, "again")[0] == refs


def test_maintain_names_a_repository_that_does_not_exist(srv: GitServer) -> None:
    tenant = srv.new_tenant()
    result = srv.cli("maintain", f"{tenant}/nope", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"gitserver: error: repository {tenant}/nope does not exist"
    result = srv.cli("maintain", "no-slash", check=False)
    assert result.returncode == 1 and "expected TENANT/REPO" in result.stderr
