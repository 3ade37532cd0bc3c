"""The scale-out topology: one PostgreSQL, one shared data dir, two of each part.

Two ``gitserver ssh``, two ``gitserver api`` and two ``gitserver worker`` processes run on their
own loopback ports against the same database and data dir, exactly as replicas on several
hosts would (the data dir standing in for the shared storage). What an operator relies on:

- a push through one SSH replica is cloneable through the other, and its pipeline is run by
  whichever worker claims it;
- a pipeline cancelled through the second API replica stops on whichever worker runs it;
- a replica killed mid-traffic does not stop the others from serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, postgres_unavailable_reason, wait_for
from tests.functional.conftest import GitServer, commit_files, make_repo

pytestmark = pytest.mark.skipif(postgres_unavailable_reason() is not None,
                                reason=f"replicas need PostgreSQL: {postgres_unavailable_reason()}")


class Replicas:
    """Handles on the second replica of each part (the first ones are ``srv.procs``)."""

    def __init__(self, srv: GitServer) -> None:
        self.srv = srv
        self.ssh_port = free_port()
        self.http_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        srv.procs["ssh-2"] = srv.spawn("ssh", env={"GITSERVER_SSH_PORT": str(self.ssh_port)})
        srv.procs["api-2"] = srv.spawn("api", env={"GITSERVER_HTTP_PORT": str(self.http_port)})
        srv.procs["worker-2"] = srv.spawn("worker")
        srv.wait_ready(ssh_port=self.ssh_port, http_url=self.http_url, what="the second replicas")

    def repo_url(self, tenant: str, repo: str) -> str:
        return f"ssh://git@127.0.0.1:{self.ssh_port}/{tenant}/{repo}.git"

    def api(self, method: str, path: str, token: str, **kwargs: object) -> requests.Response:
        return requests.request(method, self.http_url + path, headers={"Authorization": f"Bearer {token}"},
                                timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def topology(tmp_path: Path, git_env: dict[str, str], pg_cluster: object) -> Iterator[tuple[GitServer, Replicas]]:
    db_url = pg_cluster.create_database()  # type: ignore[attr-defined]
    srv = GitServer(tmp_path / "data", db_url, git_env, parts=("ssh", "api", "worker"))
    try:
        srv.start()
        yield srv, Replicas(srv)
    finally:
        srv.stop()


def _pipeline(srv: GitServer, pipeline_id: int, token: str) -> dict:
    resp = srv.api("GET", f"/api/v1/pipelines/{pipeline_id}", token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _pipeline_id(push_output: str) -> int:
    for line in push_output.splitlines():
        if "pipeline" in line and "queued:" in line:
            return int(line.split("pipeline", 1)[1].split()[0])
    raise AssertionError(f"no pipeline line in the push output:\n{push_output}")


def test_push_through_one_replica_clones_through_the_other(topology: tuple[GitServer, Replicas],
                                                           tmp_path: Path, git_env: dict[str, str]) -> None:
    srv, second = topology
    tenant = srv.new_tenant()
    alice = srv.new_user(tenant, "admin")
    repo = srv.new_repo(tenant)
    work = make_repo(tmp_path / "work", git_env, {"README.md": "through replica one\n"})
    pushed = srv.git(alice, "push", srv.repo_url(tenant, repo), "main", cwd=work)
    pipeline_id = _pipeline_id(pushed.stderr)

    clone = tmp_path / "clone"
    srv.git(alice, "clone", "-q", second.repo_url(tenant, repo), str(clone))
    assert (clone / "README.md").read_text() == "through replica one\n"

    # Whichever worker claimed it, the pipeline finishes and replica two's API reports it.
    def done() -> bool:
        return second.api("GET", f"/api/v1/pipelines/{pipeline_id}", alice.token).json()["status"] == "succeeded"

    wait_for(done, timeout=60, interval=0.3, what="the pipeline to succeed")
    tag = second.api("GET", f"/api/v1/pipelines/{pipeline_id}", alice.token).json()["archive_tag"]
    assert tag.startswith("repour-")
    shallow = tmp_path / "shallow"
    srv.git(alice, "clone", "-q", "--depth", "1", "--branch", tag, second.repo_url(tenant, repo), str(shallow))
    assert (shallow / "README.md").read_text() == "through replica one\n"


def _sleepers(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_cancel_through_the_second_api_stops_the_step_on_any_worker(
        topology: tuple[GitServer, Replicas], tmp_path: Path, git_env: dict[str, str]) -> None:
    srv, second = topology
    tenant = srv.new_tenant()
    alice = srv.new_user(tenant, "admin")
    repo = srv.new_repo(tenant, builds=True)
    marker = f"sleep 600{os.getpid() % 10}"  # a command line no other test runs
    work = make_repo(tmp_path / "work", git_env, {
        ".gitserver/pipeline.toml": f'[[steps]]\nname = "wait"\ncommand = "{marker}"\n'})
    pipeline_id = _pipeline_id(srv.git(alice, "push", srv.repo_url(tenant, repo), "main", cwd=work).stderr)

    wait_for(lambda: bool(_sleepers(marker)), timeout=60, interval=0.2, what="the build step to start")
    assert _pipeline(srv, pipeline_id, alice.token)["status"] == "running"

    started = time.monotonic()
    resp = second.api("POST", f"/api/v1/pipelines/{pipeline_id}/cancel", alice.token)
    assert resp.status_code in (200, 202), resp.text
    wait_for(lambda: _pipeline(srv, pipeline_id, alice.token)["status"] == "cancelled", timeout=10,
             interval=0.1, what="the pipeline to be cancelled")
    wait_for(lambda: not _sleepers(marker), timeout=10, interval=0.1, what="the step's process to die")
    assert time.monotonic() - started < 5.0


def test_one_replica_killed_mid_traffic_the_others_keep_serving(
        topology: tuple[GitServer, Replicas], tmp_path: Path, git_env: dict[str, str]) -> None:
    srv, second = topology
    tenant = srv.new_tenant()
    alice = srv.new_user(tenant, "admin")
    repo = srv.new_repo(tenant)
    work = make_repo(tmp_path / "work", git_env, {"blob.bin": os.urandom(2_000_000)})
    srv.git(alice, "push", srv.repo_url(tenant, repo), "main", cwd=work)

    results: dict[str, list[bool]] = {"one": [], "two": []}
    stop = threading.Event()

    def clone_loop(name: str, url: str) -> None:
        n = 0
        while not stop.is_set() and n < 40:
            n += 1
            target = tmp_path / f"c-{name}-{n}"
            ok = srv.git(alice, "clone", "-q", url, str(target), check=False, timeout=60).returncode == 0
            results[name].append(ok)

    threads = [threading.Thread(target=clone_loop, args=("one", srv.repo_url(tenant, repo))),
               threading.Thread(target=clone_loop, args=("two", second.repo_url(tenant, repo)))]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(results["two"]) >= 2, timeout=60, interval=0.1, what="clones to flow")
    # SIGKILL: no graceful anything. Replica one's clients fail; replica two must not notice.
    for part in ("ssh", "api", "worker"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(srv.procs[part].pid, signal.SIGKILL)
    killed_at = len(results["two"])
    wait_for(lambda: len(results["two"]) >= killed_at + 3, timeout=60, interval=0.1,
             what="replica two to keep cloning")
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    assert all(results["two"]), results["two"]

    # The surviving API and worker still serve: a push through replica two gets its pipeline
    # run by worker two.
    commit_files(work, git_env, {"after.txt": "after the kill\n"})
    pushed = srv.git(alice, "push", second.repo_url(tenant, repo), "main", cwd=work)
    pipeline_id = _pipeline_id(pushed.stderr)
    wait_for(lambda: second.api("GET", f"/api/v1/pipelines/{pipeline_id}", alice.token).json()["status"]
             == "succeeded", timeout=60, interval=0.3, what="worker two to run the pipeline")
