"""The chaos soak of issue 21 (finding 3), bounded: clients push branches and tags in a loop
while a part dies at random moments (PostgreSQL: the cluster is crash-stopped and restarted;
SQLite: the SSH daemon is ``kill -9``ed and respawned). At the end every push git
acknowledged with ``ok`` is in the ledger (done or recovered) with its pipeline, and
``gitserver check`` (which verifies the ledger against the reflogs too) is clean.

Each run prints one row (``-s``): acknowledged pushes, how many of them the ledger has, faults
injected, and pushes acknowledged with the "will record this push shortly" warning.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PostgresCluster, postgres_unavailable_reason, wait_for
from tests.functional.conftest import GitServer, User, commit_files, start_server
from tests.functional.test_ledger_faults import FAULT_ENV, api_all, ledger_view, seeded

CLIENTS = 4
PUSHES_PER_CLIENT = 40
SOAK_SECONDS = 45.0  # the pushing stops then, whatever the count (2-core CI)
TAG_EVERY = 3  # every third push carries a new tag with the branch
FAULT_GAP = (1.0, 3.0)  # seconds between faults
OUTAGE = (0.3, 1.5)  # seconds a database stays down
LATER_WARNING = "will record this push shortly"


class Soak:
    """Clients pushing while ``fault`` is injected at random moments."""

    def __init__(self, srv: GitServer, fault: Callable[[random.Random], None], seed: int) -> None:
        self.srv = srv
        self.fault = fault
        self.random = random.Random(seed)
        self.acknowledged: list[tuple[str, str]] = []  # (ref, value) of pushes told ok
        self.pushes_ok = 0
        self.warned = 0
        self.faults = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def client(self, k: int, user: User, work: Path, git_env: dict[str, str]) -> None:
        deadline = time.monotonic() + SOAK_SECONDS
        for i in range(PUSHES_PER_CLIENT):
            if time.monotonic() > deadline:
                return
            head = commit_files(work, git_env, {f"c{k}.txt": f"{i}\n"})
            refspecs = [f"HEAD:refs/heads/c{k}"]
            if i % TAG_EVERY == 0:
                subprocess.run(["git", "tag", f"c{k}-{i}"], cwd=work, env=git_env, check=True)
                refspecs.append(f"refs/tags/c{k}-{i}")
            result = self.srv.git(user, "push", "origin", *refspecs, cwd=work, check=False, timeout=120)
            if result.returncode != 0:
                continue  # refused or cut off: the next push carries this commit on
            with self.lock:
                self.pushes_ok += 1
                self.warned += LATER_WARNING in result.stderr
                self.acknowledged.append((f"refs/heads/c{k}", head))
                if len(refspecs) > 1:
                    self.acknowledged.append((f"refs/tags/c{k}-{i}", head))

    def faults_loop(self) -> None:
        while not self.stop.wait(self.random.uniform(*FAULT_GAP)):
            self.fault(self.random)
            self.faults += 1


def run_soak(srv: GitServer, fault: Callable[[random.Random], None], git_env: dict[str, str],
             tmp_path: Path, backend: str) -> None:
    tenant, repo, user, _work = seeded(srv, git_env, tmp_path)
    works = []
    for k in range(CLIENTS):
        work = tmp_path / f"client{k}"
        srv.git(user, "clone", "-q", srv.repo_url(tenant, repo), str(work))
        works.append(work)
    seed = int(os.environ.get("GITSERVER_SOAK_SEED", random.randrange(1 << 30)))
    soak = Soak(srv, fault, seed)
    faults = threading.Thread(target=soak.faults_loop)
    faults.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(soak.client, k, user, works[k], git_env) for k in range(CLIENTS)]:
                future.result()
    finally:
        soak.stop.set()
        faults.join()
    assert soak.pushes_ok and soak.faults, "the soak pushed nothing or injected no fault"
    wanted = set(soak.acknowledged)

    def settled() -> bool:
        try:
            view = ledger_view(srv, user, tenant, repo)
        except (AssertionError, OSError):
            return False  # the API is back in a moment
        with_pipeline = {p["push_id"] for p in view.pipelines}
        return (wanted <= view.recorded and all(p["id"] in with_pipeline for p in view.pushes)
                and srv.cli("check", check=False).returncode == 0)

    try:
        wait_for(settled, timeout=120, interval=1.0, what="the ledger to settle after the soak")
    except AssertionError:
        view = ledger_view(srv, user, tenant, repo)
        check = srv.cli("check", check=False)
        lost = sorted(wanted - view.recorded)
        every = api_all(srv, f"/api/v1/tenants/{tenant}/repos/{repo}/pushes?state=all&limit=100")
        involved = [p for p in every if any((u["ref"], u["new"]) in lost for u in p["ref_updates"])]  # type: ignore[attr-defined]
        raise AssertionError(f"seed {seed}: acknowledged but not in the ledger: {lost}\n"
                             f"pushes of those values in any state: {involved}\n"
                             f"check: {check.stdout}{check.stderr}") from None
    print(f"\nSOAK-ROW | {backend} | seed {seed} | {soak.pushes_ok} pushes acknowledged "
          f"({len(wanted)} ref values) | {len(wanted)}/{len(wanted)} in the ledger | "
          f"{soak.faults} faults | {soak.warned} acknowledged with the recording warning |")


@pytest.mark.skipif(postgres_unavailable_reason() is not None,
                    reason=f"needs PostgreSQL: {postgres_unavailable_reason()}")
def test_soak_postgresql_restarted_at_random(tmp_path: Path, git_env: dict[str, str]) -> None:
    # A crash stop (the postmaster killed) loses nothing committed; fsync stays off, since
    # the machine itself does not crash here.
    cluster = PostgresCluster(durable_commits=True)
    cluster.start()
    srv = None

    def crash(rng: random.Random) -> None:
        cluster.stop_server()  # -m immediate: as a killed postmaster
        time.sleep(rng.uniform(*OUTAGE))
        cluster.start_server()

    try:
        srv = start_server(tmp_path, cluster.create_database(), git_env,
                           parts=("ssh", "api", "worker"), extra_env={**FAULT_ENV, "GITSERVER_WORKERS": "1"})
        run_soak(srv, crash, git_env, tmp_path, "postgresql")
    finally:
        if srv is not None:
            srv.stop()
        cluster.stop()


@pytest.fixture
def sqlite_server(tmp_path: Path, git_env: dict[str, str]) -> Iterator[GitServer]:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'soak.db'}", git_env,
                       parts=("ssh", "api", "worker"), extra_env={**FAULT_ENV, "GITSERVER_WORKERS": "1"})
    try:
        yield srv
    finally:
        srv.stop()


def test_soak_sqlite_ssh_daemon_killed_at_random(sqlite_server: GitServer, git_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    srv = sqlite_server

    def kill_daemon(_rng: random.Random) -> None:
        srv.procs["ssh"].send_signal(signal.SIGKILL)
        srv.procs["ssh"].wait()
        srv.procs["ssh"] = srv.spawn("ssh")
        srv.wait_ready()

    run_soak(srv, kill_daemon, git_env, tmp_path, "sqlite")
