"""A full disk (docs/limits.md): the data dir on a small tmpfs, filled to the last byte while
the real server runs. Reads keep answering 200, writes get 507 and leave nothing behind, the
metrics files (in <data>/metrics, on the same disk) crash no process, and the pipeline worker
backs off and resumes once space is freed. Needs root to mount the tmpfs."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, make_repo

API = "/api/v1"


def _mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs at ``path``; the reason when that is not possible here."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot mount a tmpfs here: {result.stderr.strip()}"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "data"  # the data dir itself; the server's logs stay beside it, off the tmpfs
    reason = _mount_tmpfs(disk, 48)
    if reason:
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full."""
    filler = disk / "filler.tmp"
    chunk = b"\0" * (1024 * 1024)
    # Unbuffered: a buffered file's close would try the failed write again and raise ENOSPC
    # from the with statement, depending on how many bytes happened to be free.
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as fh:  # the last few pages
        while True:
            fh.write(b"\0" * 4096)
    return filler


def checkpoint(db: Path) -> None:
    """Empty SQLite's write-ahead log, so that the next write needs new disk blocks (a WAL
    keeps its size after a checkpoint and would otherwise take a few more writes)."""
    def truncated() -> bool:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0 and (not db.with_name(db.name + "-wal").exists()
                              or db.with_name(db.name + "-wal").stat().st_size == 0)
    wait_for(truncated, timeout=30, interval=0.2, what="the WAL to be checkpointed")


def test_full_disk_reads_answer_writes_refuse_worker_resumes(small_disk: Path, git_env: dict[str, str]) -> None:
    data = small_disk
    srv = GitServer(data, f"sqlite:///{data / 'gitserver.db'}", git_env, parts=("ssh", "api"))
    try:
        srv.start()
        tenant = srv.new_tenant()
        user = srv.new_user(tenant, role="admin")
        repo = srv.new_repo(tenant, grants={user.name: "write"})
        work = make_repo(small_disk.parent / "work", git_env)
        pushed = srv.git(user, "push", srv.repo_url(tenant, repo), "main", cwd=work)
        pipeline_id = int(re.search(r"pipeline (\d+) queued", pushed.stderr).group(1))  # type: ignore[union-attr]
        assert srv.api("GET", f"{API}/tenants/{tenant}").status_code == 200
        checkpoint(data / "gitserver.db")
        filler = fill(small_disk)

        # Reads answer, also on routes and statuses not seen before (new metric entries).
        for path in (f"{API}/tenants/{tenant}", f"{API}/tenants/{tenant}/repos", f"{API}/tenants",
                     f"{API}/tenants/{tenant}/repos/{repo}", "/healthz", "/metrics"):
            assert srv.api("GET", path).status_code == 200, path
        assert srv.api("GET", f"{API}/tenants/nosuchtenant").status_code == 404
        assert srv.api("GET", f"{API}/tenants/{tenant}", token=user.token).status_code == 200

        # Writes are refused with a clear answer, and nothing is left half-written.
        resp = srv.api("POST", f"{API}/tenants", {"name": "newtenant"})
        assert resp.status_code == 507, resp.text
        assert resp.json()["title"] == "Insufficient Storage"
        assert "disk is full" in resp.json()["description"]
        assert resp.headers["Retry-After"] == "60"
        resp = srv.api("POST", f"{API}/tenants/{tenant}/repos", {"name": "newrepo"})
        assert resp.status_code == 507, resp.text

        # A worker started now cannot claim anything: it waits, it does not crash or spin.
        srv.procs["worker"] = srv.spawn("worker")
        time.sleep(8)
        assert srv.procs["worker"].poll() is None, srv.logs()
        assert srv.api("GET", f"{API}/pipelines/{pipeline_id}").json()["status"] == "queued"

        filler.unlink()
        wait_for(lambda: srv.api("GET", f"{API}/pipelines/{pipeline_id}").json()["status"] == "succeeded",
                 timeout=120, interval=0.5, what="the pipeline to run once space is back")
        assert srv.api("POST", f"{API}/tenants", {"name": "newtenant"}).status_code == 201
        assert srv.api("GET", f"{API}/tenants/{tenant}/repos/newrepo").status_code == 404
        assert not (data / "repos" / tenant / "newrepo.git").exists()
        assert not [p for p in (data / "repos" / tenant).iterdir() if p.name.startswith(".newrepo.")]

        logs = srv.logs()
        assert "SIGBUS" not in logs, logs
        assert "Traceback" not in logs, logs
        assert logs.count("no job is claimed until there is space again") <= 2  # once per job thread
        assert "disk space is back" in logs
        for name, proc in srv.procs.items():
            assert proc.poll() is None, f"{name} died:\n{logs}"
    finally:
        srv.stop()
