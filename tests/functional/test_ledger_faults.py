"""The ledger invariant under hostile clients and faults (docs/ledger.md).

Every ref value on disk must be the ``new`` of a recorded push that has a pipeline, whatever
the client does and whichever process dies. Each test asserts it through the public surface:
``git ls-remote`` for the refs, the REST API for pushes and pipelines, and ``gitserver check``.
Each prints one row of the fault table in docs/ledger.md (run with ``-s`` to see them).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVER_REFS, PostgresCluster, postgres_unavailable_reason, wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server

ZERO = "0" * 40
FAULT_ENV = {
    # Settle intents left by killed processes within seconds, not the production 5 minutes.
    "GITSERVER_RECEIVE_FINISH_TIMEOUT": "3",
    "GITSERVER_REFS_RECONCILE_INTERVAL": "1",
    "GITSERVER_QUARANTINE_STALE_SECONDS": "2",
    "GITSERVER_JOB_LEASE_SECONDS": "2",
    "GITSERVER_JOB_RECONCILE_INTERVAL": "1",
}


# --- the public surface ---------------------------------------------------------------------

def ls_remote(srv: GitServer, user: User, tenant: str, repo: str) -> dict[str, str]:
    """Refs a client sees (archive refs, the reference log and the attestation notes, which the
    server writes itself, left out)."""
    out = srv.git(user, "ls-remote", srv.repo_url(tenant, repo)).stdout
    found = {}
    for line in out.splitlines():
        oid, ref = line.split("\t")
        short = ref.lower()
        archive = short.startswith(("refs/tags/repour-", "refs/heads/branch-repour-"))
        if ref == "HEAD" or ref.endswith("^{}") or archive or ref.startswith(SERVER_REFS):
            continue
        found[ref] = oid
    return found


def api_all(srv: GitServer, path: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        resp = srv.api("GET", path, params={"cursor": cursor} if cursor else None)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items += body["items"]
        cursor = body.get("next")
        if not cursor:
            return items


@dataclasses.dataclass
class Ledger:
    refs_on_disk: dict[str, str]
    pushes: list[dict[str, object]]
    pipelines: list[dict[str, object]]

    @property
    def recorded(self) -> set[tuple[str, str]]:
        return {(u["ref"], u["new"]) for p in self.pushes for u in p["ref_updates"]}  # type: ignore[index, union-attr]


def ledger_view(srv: GitServer, user: User, tenant: str, repo: str) -> Ledger:
    base = f"/api/v1/tenants/{tenant}/repos/{repo}"
    return Ledger(ls_remote(srv, user, tenant, repo), api_all(srv, f"{base}/pushes?limit=100"),
                  api_all(srv, f"{base}/pipelines?limit=100"))


def assert_invariant(srv: GitServer, user: User, tenant: str, repo: str, fault: str,
                     accepted: int, timeout: float = 60) -> Ledger:
    """Wait until every ref on disk is recorded by a push with a pipeline and ``gitserver
    check`` passes; print the fault table row. ``accepted``: pushes whose client was told ok."""
    def settled() -> Ledger | None:
        view = ledger_view(srv, user, tenant, repo)
        with_pipeline = {p["push_id"] for p in view.pipelines}
        if not set(view.refs_on_disk.items()) <= view.recorded:
            return None
        if any(p["id"] not in with_pipeline for p in view.pushes):
            return None
        return view if srv.cli("check", check=False).returncode == 0 else None

    try:
        view = wait_for(settled, timeout=timeout, interval=0.5, what=f"the ledger to settle after {fault}")
    except AssertionError:
        view = ledger_view(srv, user, tenant, repo)
        check = srv.cli("check", check=False)
        raise AssertionError(f"{fault}: refs {view.refs_on_disk}\nrecorded {view.recorded}\n"
                             f"check: {check.stdout}{check.stderr}\n{srv.logs()}") from None
    refs_changed = sum(1 for p in view.pushes for _ in p["ref_updates"])  # type: ignore[union-attr]
    print(f"\nFAULT-ROW | {fault} | {accepted} | {len(view.refs_on_disk)} | {len(view.pushes)} "
          f"({refs_changed} ref updates) | {len(view.pipelines)} |")
    assert len(view.pushes) >= accepted  # every push a client was told succeeded is recorded
    return view


# --- a raw receive-pack client --------------------------------------------------------------

def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


class RawPush:
    """``git-receive-pack`` spoken by hand over the real OpenSSH client."""

    def __init__(self, srv: GitServer, user: User, tenant: str, repo: str) -> None:
        argv = [*srv.ssh_command(user.key_path), "-p", str(srv.ssh_port), "git@127.0.0.1",
                f"git-receive-pack '{tenant}/{repo}.git'"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=srv.git_env)
        self.advertised = self._read_advertisement()

    def _read_exact(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        data = b""
        while len(data) < n:
            chunk = self.proc.stdout.read(n - len(data))
            if not chunk:
                raise EOFError("receive-pack closed the connection")
            data += chunk
        return data

    def _read_advertisement(self) -> dict[str, str]:
        refs = {}
        while (length := int(self._read_exact(4), 16)) != 0:
            line = self._read_exact(length - 4).split(b"\0")[0].decode().strip()
            oid, ref = line.split(" ", 1)
            refs[ref] = oid
        return refs

    def send(self, commands: list[tuple[str, str, str]], pack: bytes, sideband: bool) -> None:
        assert self.proc.stdin is not None
        caps = b"report-status" + (b" side-band-64k" if sideband else b"")
        out = b""
        for i, (old, new, ref) in enumerate(commands):
            line = f"{old} {new} {ref}".encode()
            out += pkt(line + (b"\0" + caps if i == 0 else b"") + b"\n")
        self.proc.stdin.write(out + b"0000" + pack)
        self.proc.stdin.flush()

    def read_until(self, marker: bytes, timeout: float = 60) -> bytes:
        """Read the answer until ``marker`` appears (raw or inside side-band packets)."""
        assert self.proc.stdout is not None
        got = b""
        deadline = time.monotonic() + timeout
        while marker not in got:
            assert time.monotonic() < deadline, f"no {marker!r} in {got!r}"
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            got += chunk
        return got

    def hang_up(self) -> None:
        """The client vanishes: its ssh process dies, the TCP connection closes."""
        self.proc.kill()
        self.proc.wait()


def make_pack(work: Path, git_env: dict[str, str], new: str, old: str = ZERO) -> bytes:
    revs = f"{new}\n" + (f"^{old}\n" if old != ZERO else "")
    return subprocess.run(["git", "pack-objects", "--stdout", "--revs", "-q"], cwd=work, env=git_env,
                          input=revs.encode(), capture_output=True, check=True).stdout


def seeded(srv: GitServer, git_env: dict[str, str], tmp_path: Path) -> tuple[str, str, User, Path]:
    tenant = srv.new_tenant()
    user = srv.new_user(tenant, role="admin")
    repo = srv.new_repo(tenant)
    work = make_repo(tmp_path / "work", git_env)
    srv.git(user, "remote", "add", "origin", srv.repo_url(tenant, repo), cwd=work)
    srv.git(user, "push", "origin", "main", cwd=work)
    return tenant, repo, user, work


# --- hostile clients ------------------------------------------------------------------------

@pytest.mark.parametrize("sideband", [False, True], ids=["plain", "side-band"])
@pytest.mark.parametrize("when", ["after-ok", "after-pack"])
def test_hang_up_loses_no_record(server: GitServer, git_env: dict[str, str], tmp_path: Path,
                                 sideband: bool, when: str) -> None:
    tenant, repo, user, work = seeded(server, git_env, tmp_path)
    commit = commit_files(work, git_env, {"x.txt": "x\n"})
    client = RawPush(server, user, tenant, repo)
    client.send([(ZERO, commit, "refs/heads/x")], make_pack(work, git_env, commit), sideband)
    if when == "after-ok":
        assert b"ok refs/heads/x" in client.read_until(b"ok refs/heads/x")
    else:
        time.sleep(0.3)  # let the pack reach the server; the push may be in its hook now
    client.hang_up()
    # Either way the ledger holds; after `ok` the ref is there and recorded.
    view = assert_invariant(server, user, tenant, repo, f"hang-up {when} ({'side-band' if sideband else 'plain'})",
                            accepted=2 if when == "after-ok" else 1)  # pushes told ok
    if when == "after-pack" and "refs/heads/x" not in view.refs_on_disk:
        return  # the pack did not arrive whole before the hang-up: nothing moved, nothing recorded
    assert view.refs_on_disk.get("refs/heads/x") == commit
    push = next(p for p in view.pushes if any(u["ref"] == "refs/heads/x" for u in p["ref_updates"]))  # type: ignore[union-attr]
    assert push["user"] == user.name and push["state"] == "done"


def test_same_ref_twice_is_refused_whole(server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user, work = seeded(server, git_env, tmp_path)
    server.git(user, "push", "origin", "main:refs/heads/d", cwd=work)
    x = ls_remote(server, user, tenant, repo)["refs/heads/d"]
    y = commit_files(work, git_env, {"y.txt": "y\n"})
    z = commit_files(work, git_env, {"z.txt": "z\n"})
    before = ledger_view(server, user, tenant, repo)
    client = RawPush(server, user, tenant, repo)
    client.send([(x, y, "refs/heads/d"), (y, z, "refs/heads/d")], make_pack(work, git_env, z, x), False)
    answer = client.read_until(b"0000", timeout=60) + client.proc.stdout.read()  # type: ignore[union-attr]
    client.proc.wait()
    # git matches the hook's verdicts to commands by ref name, so the second command of the
    # same ref reads "proc-receive failed to report status": refused as well.
    assert b"ng refs/heads/d this push names the ref more than once; nothing was changed" in answer
    assert answer.count(b"ng refs/heads/d") == 2 and b"ok refs/heads/d" not in answer, answer
    view = assert_invariant(server, user, tenant, repo, "same ref twice in one push", accepted=2)
    assert view.refs_on_disk["refs/heads/d"] == x  # nothing moved
    assert len(view.pushes) == len(before.pushes)


def test_tag_of_blob_and_tree_never_fail_the_other_refs(server: GitServer, git_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    tenant, repo, user, work = seeded(server, git_env, tmp_path)
    commit_files(work, git_env, {"b.txt": "b\n"})
    run = lambda *a: subprocess.run(["git", *a], cwd=work, env=git_env, check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    blob = run("hash-object", "-w", "b.txt")
    (work / "t.txt").write_text("only in the tagged tree\n")
    run("add", "t.txt")
    tree = run("write-tree")  # a tree no commit has: its archive is new
    run("rm", "-q", "--cached", "t.txt")
    run("tag", "-a", "-m", "a blob", "blobtag", blob)
    run("tag", "-a", "-m", "a tree", "treetag", tree)
    result = server.git(user, "push", "origin", "main", "blobtag", "treetag", cwd=work)
    pipeline_id = int(result.stderr.split("pipeline ", 1)[1].split()[0])
    body = wait_for(lambda: (b := server.api("GET", f"/api/v1/pipelines/{pipeline_id}").json())
                    ["status"] in ("succeeded", "failed") and b, timeout=60, what="the pipeline")
    assert body["status"] == "succeeded", body
    archives = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/archives").json()["items"]
    refs = {a["source_ref"] for a in archives}
    assert {"refs/heads/main", "refs/tags/treetag"} <= refs and "refs/tags/blobtag" not in refs
    archive_step = next(s for s in body["steps"] if s["name"] == "archive")
    assert "refs/tags/blobtag" in archive_step["message"]
    assert_invariant(server, user, tenant, repo, "tags of a blob and of a tree", accepted=2)


# --- processes that die -----------------------------------------------------------------------

@pytest.fixture()
def split(tmp_path: Path, db_url: str, git_env: dict[str, str]) -> Iterator[GitServer]:
    srv = start_server(tmp_path, db_url, git_env, parts=("ssh", "api", "worker"),
                       extra_env={**FAULT_ENV, "GITSERVER_WORKERS": "1"})
    try:
        yield srv
    finally:
        srv.stop()


def _respawn(srv: GitServer, part: str) -> None:
    srv.procs[part] = srv.spawn(part)
    srv.wait_ready()


def test_ssh_daemon_killed_during_twenty_pushes(split: GitServer, git_env: dict[str, str],
                                                tmp_path: Path) -> None:
    tenant, repo, user, work = seeded(split, git_env, tmp_path)
    for i in range(20):
        subprocess.run(["git", "branch", f"b{i}", "main"], cwd=work, env=git_env, check=True)
        subprocess.run(["git", "checkout", "-q", f"b{i}"], cwd=work, env=git_env, check=True)
        commit_files(work, git_env, {f"f{i}.txt": f"{i}\n"})
    started = threading.Barrier(21)

    def push(i: int) -> int:
        started.wait()
        return split.git(user, "push", "origin", f"b{i}", cwd=work, check=False, timeout=120).returncode

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = [pool.submit(push, i) for i in range(20)]
        started.wait()
        time.sleep(0.6)  # the pushes are in flight: some receiving, some in their hooks
        split.procs["ssh"].send_signal(signal.SIGKILL)
        codes = [f.result() for f in results]
    split.procs["ssh"].wait()
    _respawn(split, "ssh")
    accepted = 1 + codes.count(0)
    view = assert_invariant(split, user, tenant, repo, "kill -9 of the SSH daemon during 20 pushes",
                            accepted=accepted)
    for i, code in enumerate(codes):
        if code == 0:  # the client was told ok: the ref is there
            assert f"refs/heads/b{i}" in view.refs_on_disk
    # Receive-packs that lost their daemon leave quarantine directories behind; once they are
    # gone, a daemon start removes what is stale.
    repo_path = split.repo_path(tenant, repo)
    wait_for(lambda: not _receive_packs(repo_path), timeout=60, what="orphaned receive-packs to exit")
    time.sleep(2.5)  # GITSERVER_QUARANTINE_STALE_SECONDS
    split.procs["ssh"].send_signal(signal.SIGTERM)
    split.procs["ssh"].wait(timeout=30)
    _respawn(split, "ssh")
    objects = repo_path / "objects"
    wait_for(lambda: not [p for p in objects.iterdir() if "incoming-" in p.name], timeout=30,
             what="stale quarantine directories to be removed")


def _receive_packs(repo_path: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"receive-pack {repo_path}"], capture_output=True, text=True)
    return out.stdout.split()


def test_worker_killed_mid_archive(split: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user, work = seeded(split, git_env, tmp_path)
    for i in range(150):  # 150 tags of 150 trees: an archive step that takes a while
        commit_files(work, git_env, {"n.txt": f"{i}\n"})
        subprocess.run(["git", "tag", f"v{i}"], cwd=work, env=git_env, check=True)
    result = split.git(user, "push", "origin", "--tags", cwd=work)
    pipeline_id = int(result.stderr.split("pipeline ", 1)[1].split()[0])
    archives_url = f"/api/v1/tenants/{tenant}/repos/{repo}/archives?limit=100"
    wait_for(lambda: len(api_all(split, archives_url)) >= 3, timeout=120, interval=0.05,
             what="the archive step to be under way")
    split.procs["worker"].send_signal(signal.SIGKILL)
    split.procs["worker"].wait()
    _respawn(split, "worker")
    body = wait_for(lambda: (b := split.api("GET", f"/api/v1/pipelines/{pipeline_id}").json())
                    ["status"] in ("succeeded", "failed") and b, timeout=180, what="the pipeline")
    assert body["status"] == "succeeded", (body["error"], body["steps"], split.logs())
    assert len(api_all(split, archives_url)) == 151  # every tree once (main's first commit too)
    assert_invariant(split, user, tenant, repo, "kill -9 of a worker mid-archive", accepted=2)


@pytest.mark.skipif(postgres_unavailable_reason() is not None,
                    reason=f"needs PostgreSQL: {postgres_unavailable_reason()}")
def test_postgresql_restarted_during_pushes(tmp_path: Path, git_env: dict[str, str]) -> None:
    cluster = PostgresCluster()
    cluster.start()
    srv = None
    try:
        srv = start_server(tmp_path, cluster.create_database(), git_env, extra_env=FAULT_ENV)
        tenant, repo, user, work = seeded(srv, git_env, tmp_path)
        for i in range(12):
            subprocess.run(["git", "branch", f"p{i}", "main"], cwd=work, env=git_env, check=True)
        codes: list[int] = []

        def pushes() -> None:
            for i in range(12):
                codes.append(srv.git(user, "push", "origin", f"p{i}", cwd=work, check=False,  # type: ignore[union-attr]
                                     timeout=120).returncode)
                time.sleep(0.2)

        thread = threading.Thread(target=pushes)
        thread.start()
        time.sleep(0.8)
        cluster.stop_server()
        time.sleep(1.5)
        cluster.start_server()
        thread.join(timeout=300)
        assert codes.count(0) >= 1
        view = assert_invariant(srv, user, tenant, repo, "PostgreSQL restarted during 12 pushes",
                                accepted=1 + codes.count(0), timeout=90)
        for i, code in enumerate(codes):
            if code == 0:
                assert f"refs/heads/p{i}" in view.refs_on_disk
        # Pushes refused while the database was down moved nothing; after it, pushes work.
        assert srv.git(user, "push", "origin", "main:refs/heads/after", cwd=work).returncode == 0
    finally:
        if srv is not None:
            srv.stop()
        cluster.stop()


def test_planted_ref_is_found_and_recorded_by_check_repair(tmp_path: Path, db_url: str,
                                                           git_env: dict[str, str]) -> None:
    # No periodic pass: the planted ref must be found by `check`, not quietly by the worker.
    srv = start_server(tmp_path, db_url, git_env,
                       extra_env={**FAULT_ENV, "GITSERVER_REFS_RECONCILE_INTERVAL": "3600"})
    try:
        tenant, repo, user, _work = seeded(srv, git_env, tmp_path)
        assert srv.cli("check", check=False).returncode == 0
        path = srv.repo_path(tenant, repo)
        main = ls_remote(srv, user, tenant, repo)["refs/heads/main"]
        subprocess.run(["git", "update-ref", "refs/heads/planted", main], cwd=path, check=True)
        subprocess.run(["git", "config", "receive.denyNonFastForwards", "false"], cwd=path, check=True)
        (srv.data_dir / "hooks" / "proc-receive").unlink()
        found = srv.cli("check", check=False)
        assert found.returncode == 1
        lines = found.stdout.splitlines()
        assert f"{tenant}/{repo} refs/heads/planted: {main} on disk is not in the ledger (no push recorded it)" in lines
        assert "hooks proc-receive: hook is missing" in lines
        assert any("config receive.denyNonFastForwards" in line for line in lines)
        repaired = srv.cli("check", "--repair", check=False)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert "repaired:" in repaired.stdout
        view = assert_invariant(srv, user, tenant, repo, "a ref planted on disk, then check --repair",
                                accepted=1)
        recovered = [p for p in view.pushes if p["state"] == "recovered"]
        assert len(recovered) == 1 and recovered[0]["ref_updates"] == [
            {"ref": "refs/heads/planted", "old": ZERO, "new": main, "rules": None, "signatures": None}]
        assert recovered[0]["user"] is None and recovered[0]["protocol"] == "recovered"
        # A broken archive cannot be repaired (refs never move): check keeps saying so.
        archive = api_all(srv, f"/api/v1/tenants/{tenant}/repos/{repo}/archives")[0]
        branch = f"refs/heads/branch-{archive['tag']}"
        subprocess.run(["git", "update-ref", "-d", branch], cwd=path, check=True)
        broken = srv.cli("check", "--repair", check=False)
        assert broken.returncode == 1
        assert f"{tenant}/{repo} refs/tags/{archive['tag']}: branch branch-{archive['tag']} " \
               "does not point at the archive commit" in broken.stdout
    finally:
        srv.stop()
