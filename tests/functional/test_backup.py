"""``gitserver backup`` and ``gitserver restore`` with real servers, real pushes, real git and
OpenSSH, on SQLite and PostgreSQL: a backup taken while pushes go on restores into a fresh
data dir and database where every ref is recorded and pushes go on; bad targets and bad files
are refused and leave the target empty."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from tests.backup_files import manifest_of, rewritten, with_sparse_member
from tests.conftest import SERVER_REFS, wait_for
from tests.functional.conftest import REPO_ROOT, GitServer, User, commit_files, make_repo, start_server

FINAL = ("succeeded", "failed", "cancelled")


def fresh_database(request: pytest.FixtureRequest, db_url: str, tmp_path: Path, name: str) -> str:
    """Another empty database of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    return request.getfixturevalue("pg_cluster").create_database()


def table_count(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return len(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def every(server: GitServer, path: str, token: str | None = None) -> list[Any]:
    """All items of a paged list endpoint."""
    items: list[Any] = []
    cursor = ""
    while True:
        resp = server.api("GET", f"{path}?limit=100" + (f"&cursor={cursor}" if cursor else ""), token=token)
        assert resp.status_code == 200, resp.text
        items += resp.json()["items"]
        cursor = resp.json()["next"]
        if not cursor:
            return items


def ls_remote(server: GitServer, user: User, tenant: str, repo: str) -> str:
    return server.git(user, "ls-remote", server.repo_url(tenant, repo)).stdout


def refs_of(ls_remote_output: str) -> dict[str, str]:
    return {ref: oid for oid, ref in (line.split("\t") for line in ls_remote_output.splitlines())
            if ref != "HEAD" and not ref.startswith(SERVER_REFS)}


def recorded_tips(pushes: list[dict[str, Any]]) -> dict[str, str]:
    """Each ref's value after the last recorded push that updated it."""
    tips: dict[str, str] = {}
    for push in sorted(pushes, key=lambda p: p["id"]):
        for update in push["ref_updates"]:
            tips[update["ref"]] = update["new"]
    return tips


def push(server: GitServer, user: User, work: Path, *refspecs: str) -> int:
    """Push; the id of the pipeline the server queued."""
    stderr = server.git(user, "push", "origin", *refspecs, cwd=work).stderr
    for line in stderr.splitlines():
        if "pipeline " in line and " queued: " in line:
            return int(line.split("pipeline ", 1)[1].split()[0])
    raise AssertionError(f"no pipeline line in push output:\n{stderr}")


def wait_pipeline(server: GitServer, pipeline_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = server.api("GET", f"/api/v1/pipelines/{pipeline_id}").json()
        return body if body.get("status") in FINAL else None

    return wait_for(done, timeout=120, interval=0.2, what=f"pipeline {pipeline_id}\n{server.logs()}")


def new_work(server: GitServer, user: User, git_env: dict[str, str], path: Path, tenant: str,
             repo: str, files: dict[str, str]) -> Path:
    work = make_repo(path, git_env, files)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return work


def test_backup_during_pushes_restores_every_recorded_ref(request: pytest.FixtureRequest, db_url: str,
                                                         git_env: dict[str, str], tmp_path: Path) -> None:
    backup_file = tmp_path / "server.backup"
    src = start_server(tmp_path / "a", db_url, git_env)
    try:
        tenant = src.new_tenant()
        user = src.new_user(tenant, role="admin")
        quiet, busy = src.new_repo(tenant), src.new_repo(tenant)
        work_quiet = new_work(src, user, git_env, tmp_path / "quiet", tenant, quiet, {"q.txt": "q\n"})
        assert wait_pipeline(src, push(src, user, work_quiet, "main", "HEAD:refs/tags/v1"))["status"] == "succeeded"
        work_busy = new_work(src, user, git_env, tmp_path / "busy", tenant, busy, {"b.txt": "0\n"})
        push(src, user, work_busy, "main")

        # Pushes (a fast-forward of main and a new tag each) go on through the whole backup.
        stop = threading.Event()
        finished: list[tuple[float, int, str]] = []

        def pusher() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                commit_files(work_busy, git_env, {"b.txt": f"{number}\n"}, f"change {number}")
                result = src.git(user, "push", "origin", "main", f"HEAD:refs/tags/t{number}",
                                 cwd=work_busy, check=False)
                finished.append((time.monotonic(), result.returncode, result.stderr))

        thread = threading.Thread(target=pusher)
        thread.start()
        try:
            wait_for(lambda: len(finished) >= 2, timeout=120, what="pushes before the backup")
            # Until a push finished while a backup ran (the first backup almost always sees
            # several; waiting for it, not for a time, keeps the test from being flaky).
            for _attempt in range(5):
                started = time.monotonic()
                before = len(finished)
                result = src.cli("backup", str(backup_file))
                done = time.monotonic()
                if any(started < f[0] < done for f in finished):
                    break
            assert any(started < f[0] < done for f in finished), "no push finished during any backup"
            wait_for(lambda: len([f for f in finished if f[0] > done]) >= 2, timeout=120,
                     what="pushes after the backup")
        finally:
            stop.set()
            thread.join(timeout=300)
        assert [f[2] for f in finished if f[1] != 0] == []
        assert "backup of" in result.stdout and " in " in result.stdout, result.stdout
        print(f"backup took {done - started:.2f} s while {len(finished)} pushes ran "
              f"({len([f for f in finished if started < f[0] < done])} finished during it)")
        quiet_refs = ls_remote(src, user, tenant, quiet)
        original_pushes = sorted(every(src, f"/api/v1/tenants/{tenant}/repos/{busy}/pushes"), key=lambda p: p["id"])
        original_archives = every(src, f"/api/v1/tenants/{tenant}/repos/{busy}/archives")
    finally:
        src.stop()

    dst = GitServer(tmp_path / "b" / "data", fresh_database(request, db_url, tmp_path, "restored"), git_env)
    try:
        dst.data_dir.mkdir()  # an empty directory (a mount point, say) is an empty target too
        restored = dst.cli("restore", str(backup_file))
        assert "restored 2 repositories" in restored.stdout, restored.stdout
        checked = dst.cli("check")  # the ledger invariant, the archives and the hooks
        assert "0 problem(s)" in checked.stderr, checked.stdout + checked.stderr
        dst.start()
        # The key, the token (stored as a hash), the grants came back: the user acts as before.
        # Every ref as it was (the reference log and the notes are compared below).
        assert refs_of(ls_remote(dst, user, tenant, quiet)) == refs_of(quiet_refs)
        pushes = sorted(every(dst, f"/api/v1/tenants/{tenant}/repos/{busy}/pushes", token=user.token),
                        key=lambda p: p["id"])
        # Whole pushes, in order: each one is the original's, none half there.
        assert pushes == original_pushes[:len(pushes)]
        assert len(pushes) >= 1 + before  # what had finished before the backup began is in it
        # Pipelines that were queued or running at the backup run again on the restored server
        # (and archive the same trees under the same tags); compare once they are over.
        wait_for(lambda: all(p["status"] in FINAL for p in every(
            dst, f"/api/v1/tenants/{tenant}/repos/{busy}/pipelines")), timeout=120,
            what="the restored server's pipelines")
        on_disk = refs_of(ls_remote(dst, user, tenant, busy))
        archives = every(dst, f"/api/v1/tenants/{tenant}/repos/{busy}/archives")

        def same(archive: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(archive[k] for k in ("tag", "tree_id", "commit_id", "source_commit", "pipeline_id"))

        assert {same(a) for a in archives} <= {same(a) for a in original_archives}
        expected = recorded_tips(pushes)
        for archive in archives:
            expected[f"refs/tags/{archive['tag']}^{{}}"] = archive["commit_id"]
        # Every ref on disk is recorded (a push or an archive), and every recorded ref is there.
        assert {r: o for r, o in on_disk.items() if "repour-" not in r or r.endswith("^{}")} == expected
        assert {r for r in on_disk if "repour-" in r and not r.endswith("^{}")} == (
            {f"refs/tags/{a['tag']}" for a in archives}
            | {f"refs/heads/branch-{a['tag']}" for a in archives})

        # The log was cut where it agreed with the snapshot, though pushes went on meanwhile:
        # the restored history verifies whole (signatures, chain, no move backwards, refs).
        keys = tmp_path / "allowed_signers"
        keys.write_text(requests.get(dst.http_url + "/api/v1/signing-keys/allowed_signers", timeout=10).text)
        verified = dst.cli("verify", f"file://{dst.repo_path(tenant, busy)}", "--keys", str(keys), check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # Pushes go on: the clone of the restored repository takes a fast-forward and archives it.
        clone = tmp_path / "clone"
        dst.git(user, "clone", "-q", dst.repo_url(tenant, busy), str(clone))
        commit_files(clone, git_env, {"after.txt": "restored\n"}, "after restore")
        assert wait_pipeline(dst, push(dst, user, clone, "main"))["status"] == "succeeded"
        assert refs_of(ls_remote(dst, user, tenant, busy))["refs/heads/main"] == subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    finally:
        dst.stop()


def test_restore_refuses_non_empty_targets_and_damaged_files(request: pytest.FixtureRequest, db_url: str,
                                                             git_env: dict[str, str], tmp_path: Path) -> None:
    backup_file = tmp_path / "server.backup"
    src = start_server(tmp_path / "a", db_url, git_env)
    try:
        tenant = src.new_tenant()
        user = src.new_user(tenant, role="admin")
        repo = src.new_repo(tenant)
        work = new_work(src, user, git_env, tmp_path / "w", tenant, repo,
                        {f"f{i}.txt": f"{i}\n" * 2000 for i in range(20)})
        wait_pipeline(src, push(src, user, work, "main"))
        # To stdout this time: the summary goes to stderr, the backup alone to stdout.
        streamed = subprocess.run([sys.executable, "-m", "gitserver", "backup", "-"], env=src.env,
                                  capture_output=True, timeout=120, cwd=REPO_ROOT)
        assert streamed.returncode == 0, streamed.stderr
        assert b"backup of" in streamed.stderr
        backup_file.write_bytes(streamed.stdout)
    finally:
        src.stop()
    data = backup_file.read_bytes()

    def restore(data_dir: Path, url: str, file: Path) -> subprocess.CompletedProcess[str]:
        target = GitServer(data_dir, url, git_env)
        return target.cli("restore", str(file), check=False)

    # The source itself: its data dir is not empty.
    refused = restore(src.data_dir, fresh_database(request, db_url, tmp_path, "x"), backup_file)
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr and "Traceback" not in refused.stderr

    # An empty data dir but a database in use.
    target_dir = tmp_path / "empty" / "data"
    refused = restore(target_dir, db_url, backup_file)
    assert refused.returncode == 1 and "database" in refused.stderr and "Traceback" not in refused.stderr
    assert not target_dir.exists()

    # Truncated, altered, or not a backup at all: refused, and the target stays empty.
    damaged = {"truncated": data[:len(data) // 2],
               "altered": data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:],
               "not a backup": b"hello\n" * 1000,
               # Crafted (issue 21): checksums that match a malformed refs file, and a member
               # of 10 KiB that tar's holes would make 3 GiB.
               "malformed refs": rewritten(data, "/refs", b"ref: refs/heads/main\nnot-an-id refs/heads/main\n"),
               "sparse member": with_sparse_member(manifest_of(data), tmp_path / "sparse")}
    crafted_reasons = {"malformed refs": "refs line 2: expected '<object id> <ref>'",
                       "sparse member": "member 'database/gitserver.sqlite3' is a sparse file"}
    for what, content in damaged.items():
        bad = tmp_path / f"{what.replace(' ', '-')}.backup"
        bad.write_bytes(content)
        url = fresh_database(request, db_url, tmp_path, what.replace(" ", "-"))
        refused = restore(target_dir, url, bad)
        assert refused.returncode == 1, what
        assert refused.stderr.startswith("gitserver: error: the backup file"), (what, refused.stderr)
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1, (what, refused.stderr)
        assert crafted_reasons.get(what, "") in refused.stderr, (what, refused.stderr)
        assert not target_dir.exists() or not any(target_dir.iterdir()), what
        assert not url.startswith("postgresql") or table_count(url) == 0, what
        assert [p.name for p in target_dir.parent.iterdir() if p.name not in ("data", "logs-data")] == [], what

    # The same target takes the intact backup, from stdin.
    target = GitServer(target_dir, fresh_database(request, db_url, tmp_path, "good"), git_env)
    result = subprocess.run([sys.executable, "-m", "gitserver", "restore", "-"], env=target.env, input=data,
                            capture_output=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert b"restored 1 repositories (" in result.stdout
    assert (target_dir / "repos" / tenant / f"{repo}.git").is_dir()
