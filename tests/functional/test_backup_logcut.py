"""Backups carry each repository's reference-log cut (docs/backup.md, "The reference log"), with
real servers, pushes over OpenSSH, ``gitserver backup`` and ``restore``, on SQLite and
PostgreSQL: the manifest names the cut and the refs file puts ``refs/gitserver/log`` there; the
restored log is the original's up to the cut (same commits), so ``gitserver verify --since`` of
a state written before the backup passes, while one written after later pushes tells the
restored old backup; a backup whose manifest names another cut is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from tests.backup_files import manifest_of, rewritten
from tests.functional.conftest import GitServer, commit_files, start_server
from tests.functional.test_backup import fresh_database, new_work, push, wait_pipeline

LOG = "refs/gitserver/log"


def _verify(server: GitServer, path: Path, keys: Path, *args: str) -> tuple[int, str]:
    result = server.cli("verify", f"file://{path}", "--keys", str(keys), *args, check=False)
    return result.returncode, result.stdout + result.stderr


def test_a_restore_keeps_the_log_up_to_the_cut_and_verify_since_tells_an_old_backup(
        request: pytest.FixtureRequest, db_url: str, git_env: dict[str, str], tmp_path: Path) -> None:
    backup_file = tmp_path / "server.backup"
    src = start_server(tmp_path / "a", db_url, git_env)
    try:
        tenant = src.new_tenant()
        user = src.new_user(tenant, role="admin")
        repo = src.new_repo(tenant)
        work = new_work(src, user, git_env, tmp_path / "w", tenant, repo, {"a.txt": "0\n"})
        assert wait_pipeline(src, push(src, user, work, "main"))["status"] == "succeeded"
        keys = tmp_path / "allowed_signers"
        keys.write_text(requests.get(src.http_url + "/api/v1/signing-keys/allowed_signers", timeout=10).text)
        path = src.repo_path(tenant, repo)
        before, after = tmp_path / "before.json", tmp_path / "after.json"
        assert _verify(src, path, keys, "--since", str(before)) == (0, "")
        src.cli("backup", str(backup_file))
        tip_at_backup = json.loads(before.read_text())["tip"]
        commit_files(work, git_env, {"a.txt": "1\n"})
        assert wait_pipeline(src, push(src, user, work, "main"))["status"] == "succeeded"
        shutil.copy(before, after)
        assert _verify(src, path, keys, "--since", str(after))[0] == 0  # the log grew: fine
        assert json.loads(after.read_text())["tip"] != tip_at_backup
    finally:
        src.stop()

    data = backup_file.read_bytes()
    manifest = json.loads(manifest_of(data))
    cut = manifest["logs"][f"{tenant}/{repo}"]
    assert cut["cut"] == tip_at_backup and cut["entries"] >= 3  # main, the archive tag and branch

    dst = GitServer(tmp_path / "b" / "data", fresh_database(request, db_url, tmp_path, "restored"), git_env)
    try:
        restored = dst.cli("restore", str(backup_file))
        assert "restored 1 repositories" in restored.stdout, restored.stdout
        dst.start()
        restored_path = dst.repo_path(tenant, repo)
        # The restored log holds the original's entries up to the cut: a state written before
        # the backup still sees its tip, and the whole history verifies.
        assert _verify(dst, restored_path, keys, "--since", str(before)) == (0, "")
        # A consumer who saw the pushes after the backup is told.
        code, out = _verify(dst, restored_path, keys, "--since", str(after))
        assert code == 1 and f"{LOG}: the log no longer holds entry" in out and "restored from an older state" in out
        assert "0 problem(s)" in dst.cli("check").stderr
    finally:
        dst.stop()

    # A backup whose manifest cuts the log elsewhere than its refs file is refused.
    manifest["logs"][f"{tenant}/{repo}"]["cut"] = "f" * 40
    forged = tmp_path / "forged.backup"
    forged.write_bytes(rewritten(data, "gitserver-backup.json", json.dumps(manifest).encode()))
    third = GitServer(tmp_path / "c" / "data", fresh_database(request, db_url, tmp_path, "forged"), git_env)
    refused = third.cli("restore", str(forged), check=False)
    assert refused.returncode == 1 and f"{tenant}/{repo}: its refs put {LOG} at" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
