"""One client cannot lock everyone out of SSH (docs/limits.md), with real sockets, the real
OpenSSH client and real git on loopback: a flood of half-open connections from two sources
does not lock a third out; one user holding connections does not use up the daemon's cap; a
silent upload-pack channel is closed and its git is gone, while a slow clone, and a
receive-pack waiting for its client, are not cut. Sources are told apart by binding to
127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitserver.process.background import Background
from gitserver.process.children import signal_group
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server

PER_USER = 3
PER_SOURCE = 5
CHANNEL_IDLE = 1.0
CAPS_ENV = {
    "GITSERVER_SSH_MAX_CONNECTIONS": "20",
    "GITSERVER_SSH_MAX_CONNECTIONS_PER_USER": str(PER_USER),
    "GITSERVER_SSH_MAX_CONNECTIONS_PER_SOURCE": str(PER_SOURCE),
    "GITSERVER_SSH_CHANNEL_IDLE_TIMEOUT": str(CHANNEL_IDLE),
    "GITSERVER_SSH_IDLE_TIMEOUT": "60",
}
AUTHENTICATED = "Authenticated to"  # what ssh -o LogLevel=VERBOSE prints once logged in


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def capped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           git_env: dict[str, str]) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp(f"ssh-caps-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    srv = GitServer(root / "data", db_url, git_env, extra_env=CAPS_ENV)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


# --- helpers --------------------------------------------------------------------------------


def ssh_argv(srv: GitServer, user: User, *args: str, source: str = "127.0.0.1") -> list[str]:
    """The real OpenSSH client, logging at VERBOSE (it says when it has authenticated)."""
    return [*_without_log_level(srv.ssh_command(user.key_path)), "-o", "LogLevel=VERBOSE",
            "-o", f"BindAddress={source}", "-p", str(srv.ssh_port), "git@127.0.0.1", *args]


def _without_log_level(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if arg.startswith("LogLevel=") and out and out[-1] == "-o":
            out.pop()
            continue
        out.append(arg)
    return out


@contextlib.contextmanager
def held_logins(srv: GitServer, user: User, count: int, source: str) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` authenticated connections (``ssh -N``: no channel) held open."""
    procs = [subprocess.Popen(ssh_argv(srv, user, "-N", source=source), env=srv.git_env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(count)]
    try:
        for proc in procs:
            assert proc.stderr is not None
            line = ""
            while AUTHENTICATED not in line:
                line = proc.stderr.readline()
                assert line, f"ssh -N ended before logging in ({proc.wait()})"
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def greet(srv: GitServer, user: User, source: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(srv, user, source=source), env=srv.git_env, text=True,
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


def git_pids(repo_path: Path, service: str) -> list[int]:
    """Processes running ``service`` on ``repo_path`` (their command line names both)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if service.encode() in argv and str(repo_path).encode() in argv:
            found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is left (signal 0 reaches it: they are ours, so no EPERM)."""
    return signal_group(pgid, 0)


def read_pkt_lines_until_flush(stream: object) -> None:
    """Read git's ref advertisement up to its flush packet."""
    while True:
        size = int(stream.read(4), 16)  # type: ignore[attr-defined]
        if size == 0:
            return
        stream.read(size - 4)  # type: ignore[attr-defined]


def repo_with_commit(srv: GitServer, user: User, tmp_path: Path, files: dict[str, str | bytes]) -> str:
    repo = srv.new_repo(user.tenant, grants={user.name: "write"})
    work = make_repo(tmp_path / "work", srv.git_env, files)
    srv.git(user, "push", "-q", srv.repo_url(user.tenant, repo), "main", cwd=work)
    return repo


# --- authenticated connections --------------------------------------------------------------


def test_one_user_cannot_hold_the_whole_connection_cap(capped: GitServer) -> None:
    """The finding: one authenticated user held 130 of 130 connections. Now the user's
    connections past the per-user cap are refused with a line naming the cap, and another
    user gets in."""
    tenant = capped.new_tenant()
    greedy, other = capped.new_user(tenant), capped.new_user(tenant)
    with held_logins(capped, greedy, PER_USER, source="127.0.0.2"):
        refused = greet(capped, greedy)
        assert refused.returncode == 128, refused.stderr
        assert (f"ERROR: too many SSH connections for user {greedy.name} (at most {PER_USER}, "
                "GITSERVER_SSH_MAX_CONNECTIONS_PER_USER); close some and try again") in refused.stderr
        welcome = greet(capped, other)
        assert welcome.returncode == 0, welcome.stderr
        assert f"Hi {other.name}!" in welcome.stdout
    again = greet(capped, greedy)  # the held ones are gone: room again
    assert again.returncode == 0, again.stderr


def test_one_source_cannot_hold_more_than_its_cap(capped: GitServer) -> None:
    tenant = capped.new_tenant()
    users = [capped.new_user(tenant) for _ in range(3)]
    with held_logins(capped, users[0], PER_USER, source="127.0.0.3"), \
            held_logins(capped, users[1], PER_SOURCE - PER_USER, source="127.0.0.3"):
        refused = greet(capped, users[2], source="127.0.0.3")
        assert refused.returncode == 128, refused.stderr
        assert (f"ERROR: too many SSH connections from 127.0.0.3 (at most {PER_SOURCE}, "
                "GITSERVER_SSH_MAX_CONNECTIONS_PER_SOURCE)") in refused.stderr
        welcome = greet(capped, users[2], source="127.0.0.1")
        assert welcome.returncode == 0, welcome.stderr


# --- silent channels ------------------------------------------------------------------------


def test_a_silent_upload_pack_channel_is_closed_and_its_git_killed(capped: GitServer, tmp_path: Path) -> None:
    """The finding: an upload-pack that never got a want outlived every timeout. Now it is
    closed after the channel idle timeout and its process group is gone."""
    user = capped.new_user(capped.new_tenant())
    repo = repo_with_commit(capped, user, tmp_path, {"a.txt": "a\n"})
    repo_path = capped.repo_path(user.tenant, repo)
    client = subprocess.Popen(ssh_argv(capped, user, f"git-upload-pack '{user.tenant}/{repo}.git'"),
                              env=capped.git_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None
        read_pkt_lines_until_flush(client.stdout)  # git is up and waits for our wants
        (pid,) = wait_for(lambda: git_pids(repo_path, "upload-pack"), what="git upload-pack")
        pgid = os.getpgid(pid)
        started = time.monotonic()
        # 1.5 timeouts to notice, KILL_GRACE for SIGTERM, and room for a busy machine.
        wait_for(lambda: not group_alive(pgid), timeout=CHANNEL_IDLE * 1.5 + 2 + 5,
                 interval=0.1, what="the silent upload-pack's process group to be gone")
        assert time.monotonic() - started >= CHANNEL_IDLE * 0.9
        _, stderr = client.communicate(timeout=15)
        assert client.returncode == 128
        assert (b"ERROR: nothing was sent or received on this channel for 1 s "
                b"(GITSERVER_SSH_CHANNEL_IDLE_TIMEOUT)") in stderr
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


THROTTLE = """
import subprocess, sys, time
ssh = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
while data := ssh.stdout.read1(64 * 1024):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    time.sleep(len(data) / RATE)
sys.exit(ssh.wait())
"""


def test_a_slow_clone_that_keeps_reading_is_not_cut(capped: GitServer, tmp_path: Path) -> None:
    """The client sends its wants at the start and nothing after; a clone it reads slowly
    (here 2 MiB/s, several idle timeouts long) is not silent, since the pack keeps moving."""
    user = capped.new_user(capped.new_tenant())
    size = 6 * 1024 * 1024
    repo = repo_with_commit(capped, user, tmp_path, {"big.bin": os.urandom(size)})
    throttle = tmp_path / "throttle.py"
    throttle.write_text(THROTTLE.replace("RATE", str(2 * 1024 * 1024)))
    env = {**capped.client_env(user),
           "GIT_SSH_COMMAND": f"{sys.executable} {throttle} " + " ".join(capped.ssh_command(user.key_path))}
    started = time.monotonic()
    result = subprocess.run(["git", "clone", "-q", capped.repo_url(user.tenant, repo), str(tmp_path / "clone")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started > 2 * CHANNEL_IDLE
    assert (tmp_path / "clone" / "big.bin").stat().st_size == size


def test_a_receive_pack_waiting_for_its_client_is_never_cut(capped: GitServer, tmp_path: Path) -> None:
    """Before its commands the client may be running a long pre-push hook; after them the push
    may be recording (docs/architecture.md): neither is cut by the channel idle timeout."""
    user = capped.new_user(capped.new_tenant())
    repo = repo_with_commit(capped, user, tmp_path, {"a.txt": "a\n"})
    repo_path = capped.repo_path(user.tenant, repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "work", env=capped.git_env,
                          capture_output=True, text=True, check=True).stdout.strip()
    new = commit_files(tmp_path / "work", capped.git_env, {"b.txt": "b\n"})
    client = subprocess.Popen(ssh_argv(capped, user, f"git-receive-pack '{user.tenant}/{repo}.git'"),
                              env=capped.git_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stdin is not None
        read_pkt_lines_until_flush(client.stdout)
        (pid,) = wait_for(lambda: git_pids(repo_path, "receive-pack"), what="git receive-pack")
        time.sleep(CHANNEL_IDLE * 2)  # "a pre-push hook"
        assert group_alive(pid)
        command = f"{head} {new} refs/heads/main\0report-status\n".encode()
        client.stdin.write(b"%04x" % (len(command) + 4) + command + b"0000")
        client.stdin.flush()
        time.sleep(CHANNEL_IDLE * 2)  # commands read, no pack yet
        assert group_alive(pid)
        client.stdin.close()  # the client gives up: git sees EOF and ends by itself
        client.wait(timeout=30)
        wait_for(lambda: not git_pids(repo_path, "receive-pack"), timeout=30, what="receive-pack to end")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


# --- half-open connections ------------------------------------------------------------------


class Flood(Background):
    """Half-open connections (a banner, then nothing) from one source address, renewed as fast
    as the server drops them; what the server said when it dropped them is kept."""

    join_timeout = 10.0

    def __init__(self, port: int, source: str, size: int) -> None:
        self.port, self.source, self.size = port, source, size
        self.socks: list[socket.socket] = []
        self.reasons: list[bytes] = []
        self.opened = 0
        super().__init__(f"flood-{source}")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self) -> None:
        while not self._done.is_set():
            self._reap()
            if len(self.socks) < self.size:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                                source_address=(self.source, 0))
                sock.sendall(b"SSH-2.0-flood\r\n")
                sock.setblocking(False)
                self.socks.append(sock)
                self.opened += 1
            time.sleep(0.005)

    def _reap(self) -> None:
        for sock in list(self.socks):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data and b"too many" not in data:
                continue  # the server's banner
            self.reasons.append(data)
            self.socks.remove(sock)
            sock.close()


def test_half_open_floods_cannot_fill_the_connection_cap_either(capped: GitServer) -> None:
    """With the default startup caps, two flooders fit under GITSERVER_SSH_MAX_CONNECTIONS
    (20 here): a login from a third source takes the place of a flooder's oldest."""
    user = capped.new_user(capped.new_tenant())
    with Flood(capped.ssh_port, "127.0.0.2", 15) as one, Flood(capped.ssh_port, "127.0.0.3", 15) as two:
        wait_for(lambda: one.opened + two.opened >= 30, what="the flood to fill the connections")
        time.sleep(0.5)
        logins = [greet(capped, user) for _ in range(3)]
    assert [r.returncode for r in logins] == [0] * 3, [r.stderr for r in logins]


@pytest.mark.parametrize("startups, per_source", [("12", "8"), ("6:30:12", "3:30:8")],
                         ids=["hard-caps", "random-early-drop"])
def test_half_open_floods_from_two_sources_do_not_lock_a_third_out(
        tmp_path: Path, git_env: dict[str, str], startups: str, per_source: str) -> None:
    """The finding: 100 half-open connections from two sources (each at its per-source cap)
    filled the global cap, and a third source's user was refused until they timed out. Now
    logins from the flooders are dropped at random before the cap, and at the cap a quiet
    source's login takes the place of the heaviest flooder's oldest."""
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env, extra_env={
        "GITSERVER_SSH_MAX_STARTUPS": startups, "GITSERVER_SSH_PER_SOURCE_MAX_STARTUPS": per_source,
        "GITSERVER_SSH_LOGIN_GRACE_TIME": "30"})
    try:
        user = srv.new_user(srv.new_tenant())
        with Flood(srv.ssh_port, "127.0.0.2", 20) as one, Flood(srv.ssh_port, "127.0.0.3", 20) as two:
            wait_for(lambda: one.opened + two.opened >= 60, what="the flood to fill the slots")
            time.sleep(1)
            logins = [greet(srv, user) for _ in range(5)]
        assert [r.returncode for r in logins] == [0] * 5, [r.stderr for r in logins]
        said = b"".join(one.reasons + two.reasons)
        if ":" in startups:  # random early drop: refusals below the per-source hard cap
            assert any(b"in progress, limit 3:30:8" in r and b"(8 in progress" not in r
                       for r in one.reasons + two.reasons), said[:2000]
        assert b"too many unauthenticated connections" in said
    finally:
        srv.stop()
