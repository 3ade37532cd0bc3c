"""The reference log moves with the refs, with real git, OpenSSH and the real server on SQLite
and PostgreSQL (docs/provenance.md, "Who writes it, and when"): a push's entries are in
``refs/gitserver/log`` as soon as ``git push`` returns, and a push whose log cannot be
written (git's lock of the log taken, the signing key unusable) is refused with one line naming
why, its ref did not move, and no record says it did."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.functional.conftest import GitServer, User, commit_files, make_repo
from tests.functional.test_ledger_faults import api_all
from tests.functional.test_pipelines import pushed_pipeline_id, wait_pipeline

LOG = "refs/gitserver/log"


def _setup(server: GitServer, tmp_path: Path, name: str) -> tuple[User, str, str, Path]:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, name=name, grants={user.name: "write"})
    work = make_repo(tmp_path / f"work-{name}", server.git_env)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return user, tenant, repo, work


def _git_dir(server: GitServer, tenant: str, repo: str) -> list[str]:
    return ["git", "--git-dir", str(server.repo_path(tenant, repo))]


def _entries(server: GitServer, tenant: str, repo: str) -> list[dict[str, object]]:
    """The log's entries on disk, oldest first."""
    out = subprocess.run([*_git_dir(server, tenant, repo), "log", "--reverse", "--format=%B%x00", LOG],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(text) for text in out.split("\0") if text.strip()]


def _ref(server: GitServer, tenant: str, repo: str, ref: str) -> str | None:
    result = subprocess.run([*_git_dir(server, tenant, repo), "rev-parse", "-q", "--verify", ref],
                            capture_output=True, text=True)
    return result.stdout.strip() or None


def _recorded(server: GitServer, tenant: str, repo: str) -> set[tuple[str, str]]:
    """(ref, new) of every done or recovered push (the ledger)."""
    pushes = api_all(server, f"/api/v1/tenants/{tenant}/repos/{repo}/pushes?limit=100")
    return {(u["ref"], u["new"]) for p in pushes for u in p["ref_updates"]}  # type: ignore[index, union-attr]


def _head(work: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_entries_are_in_the_log_when_the_push_returns(server: GitServer, tmp_path: Path) -> None:
    user, tenant, repo, work = _setup(server, tmp_path, "atomic-now")
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    first = _head(work)
    latest = _entries(server, tenant, repo)[-1]  # read at once: no pipeline, no reconciler waited for
    assert (latest["ref"], latest["new"], latest["pusher"], latest["protocol"]) == (
        "refs/heads/main", first, user.name, "ssh")
    assert isinstance(latest["push_id"], int)
    # Two refs, one push (one transaction each), then two with --atomic (one transaction).
    second = commit_files(work, server.git_env, {"b.txt": "b\n"})
    server.git(user, "push", "-q", "origin", "main", "main:refs/heads/topic", cwd=work)
    third = commit_files(work, server.git_env, {"c.txt": "c\n"})
    server.git(user, "push", "-q", "--atomic", "origin", "main", "main:refs/heads/other", cwd=work)
    entries = _entries(server, tenant, repo)
    pushed = [(e["ref"], e["old"], e["new"]) for e in entries if e["protocol"] == "ssh"]
    assert pushed == [("refs/heads/main", "0" * 40, first), ("refs/heads/main", first, second),
                      ("refs/heads/topic", "0" * 40, second), ("refs/heads/main", second, third),
                      ("refs/heads/other", "0" * 40, third)]
    assert _ref(server, tenant, repo, "refs/heads/other") == third


def test_a_log_git_cannot_lock_refuses_the_push_and_moves_nothing(server: GitServer, tmp_path: Path) -> None:
    """A directory where git's lock of the log goes: git cannot take the lock (as with a lock
    file that cannot be created), and no writer may remove a directory."""
    user, tenant, repo, work = _setup(server, tmp_path, "atomic-locked")
    pushed = server.git(user, "push", "-q", "origin", "main", cwd=work)
    # Its archive is logged by the pipeline (the server's own refs): let it finish first.
    assert wait_pipeline(server, pushed_pipeline_id(pushed.stderr)).status == "succeeded", server.logs()
    before = _head(work)
    lock = server.repo_path(tenant, repo) / f"{LOG}.lock"
    lock.mkdir()
    try:
        new = commit_files(work, server.git_env, {"b.txt": "b\n"})
        refused = server.git(user, "push", "origin", "main", "main:refs/heads/topic", cwd=work, check=False)
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if "reference log" in line]
        assert len(lines) == 2 and all(
            f"gitserver could not write the reference log (cannot lock ref '{LOG}': Unable to create "
            f"'{LOG}.lock': File exists.); nothing was changed" in line for line in lines), refused.stderr
        assert str(server.repo_path(tenant, repo)) not in refused.stderr
    finally:
        lock.rmdir()
    assert _ref(server, tenant, repo, "refs/heads/main") == before
    assert _ref(server, tenant, repo, "refs/heads/topic") is None
    assert [e["new"] for e in _entries(server, tenant, repo) if e["protocol"] == "ssh"] == [before]
    assert not {("refs/heads/main", new), ("refs/heads/topic", new)} & _recorded(server, tenant, repo)
    assert [line for line in server.cli("check", check=False).stdout.splitlines()
            if line.startswith(f"{tenant}/{repo} ")] == []
    server.git(user, "push", "-q", "origin", "main", cwd=work)  # and it works again
    assert _entries(server, tenant, repo)[-1]["new"] == new


def test_a_stale_lock_of_the_log_does_not_stop_pushes(server: GitServer, tmp_path: Path) -> None:
    """A lock file left by a writer killed mid-write: every writer of the log holds the log's
    own lock, so one found then, and older than a live write lasts, is removed."""
    user, tenant, repo, work = _setup(server, tmp_path, "atomic-stale")
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    lock = server.repo_path(tenant, repo) / f"{LOG}.lock"
    lock.write_text("0" * 40 + "\n")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    new = commit_files(work, server.git_env, {"b.txt": "b\n"})
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    assert _entries(server, tenant, repo)[-1]["new"] == new and not lock.exists()


def test_a_push_the_server_cannot_sign_for_is_refused_and_moves_nothing(server: GitServer, tmp_path: Path) -> None:
    user, tenant, repo, work = _setup(server, tmp_path, "atomic-unsigned")
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    before = _head(work)
    signing = server.data_dir / "signing"
    current = json.loads((signing / "keys.json").read_text())["keys"][-1]["file"]
    key = signing / current
    key.rename(signing / f"{current}.away")
    try:
        new = commit_files(work, server.git_env, {"b.txt": "b\n"})
        refused = server.git(user, "push", "origin", "main", cwd=work, check=False)
    finally:
        (signing / f"{current}.away").rename(key)
    assert refused.returncode != 0
    assert ("gitserver could not write the reference log (the server's signing key is unusable); "
            "nothing was changed") in refused.stderr, refused.stderr
    assert _ref(server, tenant, repo, "refs/heads/main") == before
    assert [e["new"] for e in _entries(server, tenant, repo)] == [before]
    assert ("refs/heads/main", new) not in _recorded(server, tenant, repo)
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    assert _entries(server, tenant, repo)[-1]["new"] == new


def test_concurrent_pushes_to_different_refs_chain_one_after_the_other(server: GitServer, tmp_path: Path) -> None:
    """Pushes of one repository take turns on the log's lock: every entry lands, one chain."""
    from concurrent.futures import ThreadPoolExecutor

    user, tenant, repo, work = _setup(server, tmp_path, "atomic-concurrent")
    server.git(user, "push", "-q", "origin", "main", cwd=work)
    head = _head(work)
    branches = [f"refs/heads/c{n}" for n in range(6)]
    with ThreadPoolExecutor(len(branches)) as pool:
        results = list(pool.map(lambda ref: server.git(user, "push", "-q", "origin", f"main:{ref}", cwd=work,
                                                       check=False), branches))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    entries = _entries(server, tenant, repo)
    assert sorted(str(e["ref"]) for e in entries if e["new"] == head and e["protocol"] == "ssh") == sorted(
        ["refs/heads/main", *branches])
    # One chain: each commit has the one before as its only parent (git log walked it whole).
    count = subprocess.run([*_git_dir(server, tenant, repo), "rev-list", "--count", "--first-parent", LOG],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert int(count) == len(entries)
