"""Graceful shutdown: SIGTERM to the SSH daemon during a clone lets the clone finish."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, make_repo

# The clone's ssh output goes through this, ~4 MB/s, so the transfer is still running
# when the daemon gets SIGTERM.
THROTTLE = """
import os, subprocess, sys, time
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
# os.read returns what is there: a buffered read(n) would wait for n bytes and stall git.
while chunk := os.read(proc.stdout.fileno(), 32768):
    os.write(1, chunk)
    time.sleep(0.008)
sys.exit(proc.wait())
"""


def _children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_sigterm_lets_a_running_clone_finish(tmp_path: Path, git_env: dict[str, str]) -> None:
    srv = GitServer(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env,
                    extra_env={"GITSERVER_SSH_SHUTDOWN_GRACE": "60"}, parts=("ssh", "api"))
    try:
        srv.start()
        tenant = srv.new_tenant()
        user = srv.new_user(tenant)
        repo = srv.new_repo(tenant, grants={user.name: "write"})
        rng = random.Random(7)  # incompressible, deterministic content: ~24 MB of pack
        files = {f"blob{i}.bin": rng.randbytes(8 * 1024 * 1024) for i in range(3)}
        work = make_repo(tmp_path / "work", git_env, files)
        url = srv.repo_url(tenant, repo)
        srv.git(user, "push", url, "main", cwd=work)

        throttle = tmp_path / "throttle.py"
        throttle.write_text(THROTTLE)
        env = srv.client_env(user)
        env["GIT_SSH_COMMAND"] = f"{sys.executable} {throttle} {env['GIT_SSH_COMMAND']}"
        clone = subprocess.Popen(["git", "clone", "-q", url, str(tmp_path / "clone")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ssh_daemon = srv.procs["ssh"]
        # The transfer is running once the daemon has a git child.
        wait_for(lambda: bool(_children_of(ssh_daemon.pid)), timeout=30, interval=0.02,
                 what="git upload-pack to start")
        started = time.monotonic()
        ssh_daemon.send_signal(signal.SIGTERM)

        def refusing() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", srv.ssh_port), timeout=1):
                    return False
            except OSError:
                return True

        wait_for(refusing, timeout=10, interval=0.05, what="the daemon to stop accepting")
        assert clone.poll() is None, "the clone was still running when new connections stopped"
        _out, err = clone.communicate(timeout=120)
        assert clone.returncode == 0, err
        assert ssh_daemon.wait(timeout=60) == 0
        assert time.monotonic() - started > 0.5  # it really waited for the transfer
        fsck = subprocess.run(["git", "-C", str(tmp_path / "clone"), "fsck", "--strict"],
                              capture_output=True, text=True, env=git_env)
        assert fsck.returncode == 0, fsck.stderr
        assert (tmp_path / "clone" / "blob2.bin").read_bytes() == files["blob2.bin"]
    finally:
        srv.stop()
