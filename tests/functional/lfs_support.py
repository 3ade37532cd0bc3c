"""Helpers of the Git LFS functional tests: a client HOME with git-lfs installed, LFS work trees,
the batch API by hand, and a real S3-compatible server (moto's) for the S3 store."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port, wait_for
from tests.functional.conftest import GitServer, User

GIT_LFS = shutil.which("git-lfs")
MEDIA = "application/vnd.git-lfs+json"
LFS_HEADERS = {"Accept": MEDIA, "Content-Type": MEDIA}


def require_git_lfs() -> None:
    if GIT_LFS is None:
        pytest.skip("git-lfs is not installed (./dev test installs Debian's git-lfs)")


def lfs_home(tmp_path: Path, git_env: Mapping[str, str]) -> dict[str, str]:
    """git_env with its own HOME in which ``git lfs install`` wrote the filters (the shared
    test HOME stays as it is)."""
    home = tmp_path / "lfs-home"
    home.mkdir(exist_ok=True)
    shutil.copy(Path(git_env["HOME"]) / ".gitconfig", home / ".gitconfig")
    env = {**git_env, "HOME": str(home)}
    subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True, capture_output=True)
    return env


def run(argv: list[str], env: Mapping[str, str], cwd: Path | None = None,
        check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=dict(env), text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ssh_env(server: GitServer, user: User, env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "GIT_SSH_COMMAND": " ".join(server.ssh_command(user.key_path))}


def lfs_worktree(path: Path, env: Mapping[str, str], files: Mapping[str, bytes]) -> Path:
    """A repository tracking ``*.bin`` with LFS, one commit with ``files``."""
    run(["git", "init", "-q", "-b", "main", str(path)], env)
    run(["git", "lfs", "install", "--local"], env, cwd=path)  # the pre-push hook that uploads
    run(["git", "lfs", "track", "*.bin"], env, cwd=path)
    for name, data in files.items():
        (path / name).write_bytes(data)
    run(["git", "add", "-A"], env, cwd=path)
    run(["git", "commit", "-q", "-m", "lfs files"], env, cwd=path)
    return path


@dataclasses.dataclass(frozen=True)
class Pushed:
    """A repository into which a user pushed LFS files, and the work tree they came from."""

    tenant: str
    user: User
    repo: str
    work: Path


def pushed_lfs_repo(server: GitServer, tmp_path: Path, env: Mapping[str, str], files: Mapping[str, bytes],
                    visibility: str = "private") -> Pushed:
    """A new tenant, a user with write on a new repository, and ``files`` pushed there over SSH
    by git-lfs."""
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, visibility=visibility, grants={user.name: "write"})
    work = lfs_worktree(tmp_path / "work", env, files)
    run(["git", "push", "-q", server.repo_url(tenant, repo), "main"], ssh_env(server, user, env), cwd=work)
    return Pushed(tenant, user, repo, work)


def oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lfs_base(server: GitServer, tenant: str, repo: str) -> str:
    return f"{server.http_url}/{tenant}/{repo}.git/info/lfs"


def token_url(server: GitServer, user: User, path: str) -> str:
    """``http://x:<token>@host/<path>``: what a user puts in a URL for git over HTTP."""
    return server.http_url.replace("http://", f"http://x:{user.token}@") + path


def batch(server: GitServer, tenant: str, repo: str, operation: str, objects: list[tuple[str, int]],
          token: str | None = None, headers: Mapping[str, str] | None = None) -> requests.Response:
    all_headers = dict(LFS_HEADERS)
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    body = {"operation": operation, "transfers": ["basic"],
            "objects": [{"oid": o, "size": s} for o, s in objects]}
    return requests.post(lfs_base(server, tenant, repo) + "/objects/batch", json=body, headers=all_headers,
                         timeout=30)


def stored_objects(server: GitServer) -> set[str]:
    root = server.data_dir / "lfs" / "objects"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def leftover_uploads(server: GitServer) -> list[Path]:
    tmp = server.data_dir / "lfs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


class MotoS3:
    """moto's standalone S3 server, a real process on a loopback port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(tmp / "moto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._up, timeout=60, interval=0.2, what="moto's S3 server")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("moto's server exited")
        try:
            return requests.get(self.url + "/moto-api/", timeout=2).status_code < 500
        except requests.RequestException:
            return False

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def moto_s3(tmp: Path) -> Iterator[MotoS3]:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("boto3 and moto[server] are not installed (the test extra has them)")
    s3 = MotoS3(tmp)
    try:
        yield s3
    finally:
        s3.stop()
