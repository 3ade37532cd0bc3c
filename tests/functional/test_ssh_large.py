"""Large transfers through the SSH daemon: byte-exact round trip, and no orphans on abort."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.functional.conftest import GitServer, make_repo

SIZE = 60 * 1024 * 1024
GIT_CHILDREN = ("upload-pack", "pack-objects")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # Random bytes do not compress: the whole 60 MB crosses the channel.
    return os.urandom(SIZE)


@pytest.fixture
def big_repo(server: GitServer, tmp_path: Path, big_file: bytes) -> tuple[object, str]:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    work = make_repo(tmp_path / "work", server.git_env, {"big.bin": big_file})
    url = server.repo_url(tenant, repo)
    server.git(user, "push", url, "main", cwd=work, timeout=600)
    return user, url


def test_large_push_and_clone_round_trip(server: GitServer, tmp_path: Path, big_file: bytes,
                                         big_repo: tuple[object, str]) -> None:
    user, url = big_repo
    clone = tmp_path / "clone"
    server.git(user, "clone", "-q", url, str(clone), timeout=600)  # type: ignore[arg-type]
    got = (clone / "big.bin").read_bytes()
    assert len(got) == SIZE
    assert hashlib.sha256(got).digest() == hashlib.sha256(big_file).digest()


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, ppid in parents.items() if ppid == pid]
        found += children
        frontier += children
    return found


def _git_children_of(root: int) -> list[str]:
    left = []
    for pid in _descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(name in cmdline for name in GIT_CHILDREN):
            left.append(f"{pid}: {cmdline}")
    return left


def test_aborted_clone_leaves_no_git_process(server: GitServer, tmp_path: Path,
                                             big_repo: tuple[object, str]) -> None:
    user, url = big_repo
    daemon = server.procs["serve"].pid
    clone = subprocess.Popen(["git", "clone", "-q", url, str(tmp_path / "clone")],
                             env=server.client_env(user), stdout=subprocess.DEVNULL,  # type: ignore[arg-type]
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _git_children_of(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _git_children_of(daemon), "the clone never started on the server"
    time.sleep(0.3)  # mid-transfer
    os.killpg(clone.pid, signal.SIGKILL)  # git and its ssh client, like a ^C'd terminal
    clone.wait()
    deadline = time.monotonic() + 20
    while (left := _git_children_of(daemon)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
