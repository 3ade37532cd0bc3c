"""SSH connection limits with real sockets and the real OpenSSH client (docs/limits.md): a
per-source cap on unauthenticated connections with a login grace time, and an idle timeout for
authenticated connections with no channel. Loopback only: the "other" source is 127.0.0.2."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.functional.conftest import GitServer, start_server

PER_SOURCE = 5
GRACE = 10  # long enough that the held slots are surely still held while the test logs in


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, git_env: dict[str, str]) -> Iterator[GitServer]:
    tmp = tmp_path_factory.mktemp("ssh-limits")
    srv = start_server(tmp, f"sqlite:///{tmp / 'data' / 'gitserver.db'}", git_env, extra_env={
        "GITSERVER_SSH_PER_SOURCE_MAX_STARTUPS": str(PER_SOURCE),
        "GITSERVER_SSH_LOGIN_GRACE_TIME": str(GRACE),
        "GITSERVER_SSH_IDLE_TIMEOUT": "2"})
    try:
        yield srv
    finally:
        srv.stop()


def banner_only(port: int) -> socket.socket:
    """A client that says its version and nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"SSH-2.0-slowpoke\r\n")
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds`` (reading what it sends)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_one_source_cannot_hold_every_login_slot(limited: GitServer) -> None:
    user = limited.new_user(limited.new_tenant())
    socks = [banner_only(limited.ssh_port) for _ in range(4 * PER_SOURCE)]
    try:
        # Everything past the per-source cap is turned away at once...
        time.sleep(1)
        refused = [s for s in socks if closed_within(s, 0.05)]
        assert len(refused) == len(socks) - PER_SOURCE
        # ...while a user from another address logs in, and one from the same address too once
        # a slot frees up (the held ones end with the login grace time).
        other = limited.ssh(user, options=("-o", "BindAddress=127.0.0.2"))
        assert other.returncode == 0 and "You've authenticated to gitserver" in other.stderr + other.stdout
        same = limited.ssh(user)
        assert same.returncode != 0
        held = [s for s in socks if s not in refused]
        started = time.monotonic()
        assert all(closed_within(s, GRACE + 5) for s in held)
        assert time.monotonic() - started < GRACE + 5
        again = limited.ssh(user)
        assert again.returncode == 0, again.stderr
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def test_an_authenticated_connection_without_a_channel_is_closed_when_idle(limited: GitServer) -> None:
    user = limited.new_user(limited.new_tenant())
    started = time.monotonic()
    # -N: authenticate and open no channel at all.
    result = subprocess.run([*limited.ssh_command(user.key_path), "-N", "-p", str(limited.ssh_port),
                             "git@127.0.0.1"], env=limited.git_env, capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 15
    assert "idle: no channel open for 2 seconds" in result.stderr
