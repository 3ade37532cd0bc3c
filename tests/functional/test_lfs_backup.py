"""``gitserver backup`` carries the local LFS objects and ``restore`` puts them back: a clone of
the restored server gets the content, on SQLite and PostgreSQL, with the real git-lfs client."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.functional.conftest import GitServer, start_server
from tests.functional.lfs_support import lfs_home, lfs_worktree, oid, require_git_lfs, run, ssh_env
from tests.functional.test_backup import fresh_database

pytestmark = pytest.mark.timeout(600)


def test_backup_and_restore_bring_the_lfs_objects(request: pytest.FixtureRequest, db_url: str, tmp_path: Path,
                                                  git_env: dict[str, str]) -> None:
    require_git_lfs()
    env = lfs_home(tmp_path, git_env)
    src = start_server(tmp_path / "a", db_url, git_env)
    try:
        tenant = src.new_tenant()
        user = src.new_user(tenant)
        repo = src.new_repo(tenant, grants={user.name: "write"})
        data = b"large file " * 50_000
        work = lfs_worktree(tmp_path / "work", env, {"data.bin": data})
        run(["git", "push", "-q", src.repo_url(tenant, repo), "main"], ssh_env(src, user, env), cwd=work)
        backup_file = tmp_path / "backup.tar"
        src.cli("backup", str(backup_file))
    finally:
        src.stop()
    with tarfile.open(backup_file) as tar:
        assert f"lfs/{oid(data)}" in tar.getnames()

    dst = GitServer(tmp_path / "b" / "data", fresh_database(request, db_url, tmp_path, "restored"), git_env)
    try:
        dst.cli("restore", str(backup_file))
        checked = dst.cli("check")  # the LFS check too: every pointer's object is back
        assert "0 problem(s)" in checked.stderr, checked.stdout + checked.stderr
        dst.start()
        clone = tmp_path / "clone"
        run(["git", "clone", "-q", dst.repo_url(tenant, repo), str(clone)], ssh_env(dst, user, env))
        assert (clone / "data.bin").read_bytes() == data
    finally:
        dst.stop()

    # A member whose content is not the object it names is refused.
    bad = tmp_path / "bad.tar"
    with tarfile.open(backup_file) as tar, tarfile.open(bad, "w") as out:
        for info in tar.getmembers():
            member = tar.extractfile(info)
            content = member.read() if member else b""
            if info.name == f"lfs/{oid(data)}":
                content = content[:-1] + b"!"
            info.size = len(content)
            out.addfile(info, io.BytesIO(content))
    target = GitServer(tmp_path / "c" / "data", fresh_database(request, db_url, tmp_path, "bad"), git_env)
    refused = target.cli("restore", str(bad), check=False)
    assert refused.returncode != 0 and "lfs/" in refused.stderr, refused.stderr
