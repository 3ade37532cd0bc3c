"""Slow HTTP clients (docs/limits.md): 200 connections that dribble their request headers must
not stall the API. Real gunicorn (``gitserver serve``), real sockets and the real git client,
loopback only."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.functional.conftest import GitServer, make_repo, start_server
from tests.functional.test_smart_http import http_git, http_url

SLOW_CONNECTIONS = 200
LINE_EVERY = 3.0  # seconds between two header lines of one slow client


class SlowLoris:
    """Keeps ``n`` connections open that each send a request line, then one header line every
    few seconds and never the blank line that ends the head; reopens any the server closes."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.socks: list[socket.socket | None] = [None] * n
        self.stop = threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        return sock

    def start(self) -> None:
        for i in range(self.n):
            self.socks[i] = self._open()
        self.thread.start()

    def _run(self) -> None:
        line = 0
        while not self.stop.wait(LINE_EVERY):
            line += 1
            for i, sock in enumerate(self.socks):
                try:
                    assert sock is not None
                    sock.sendall(f"X-Slow-{line}: {'a' * 20}\r\n".encode())
                except OSError:
                    with contextlib.suppress(OSError):
                        sock.close()  # type: ignore[union-attr]
                    if self.stop.is_set():
                        return
                    with contextlib.suppress(OSError):
                        self.socks[i] = self._open()
                        self.reopened += 1

    def open_count(self) -> int:
        return sum(1 for s in self.socks if s is not None and s.fileno() != -1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for sock in self.socks:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def slow_clients(server: GitServer) -> Iterator[SlowLoris]:
    loris = SlowLoris(server.http_port, SLOW_CONNECTIONS)
    loris.start()
    try:
        yield loris
    finally:
        loris.close()


def test_healthz_and_clone_work_with_200_slow_clients(server: GitServer, tmp_path: Path,
                                                      slow_clients: SlowLoris) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    work = make_repo(tmp_path / "work", server.git_env, {"README.md": "hello\n"})
    server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", cwd=work)
    # Let the slow clients get past their first header lines (they now hold what they can).
    time.sleep(LINE_EVERY + 1)
    for _ in range(5):
        started = time.monotonic()
        assert requests.get(server.http_url + "/healthz", timeout=10).status_code == 200
        assert time.monotonic() - started < 1.0
    started = time.monotonic()
    http_git(server, "clone", "-q", http_url(server, tenant, repo), str(tmp_path / "clone"), timeout=60)
    assert (tmp_path / "clone" / "README.md").read_text() == "hello\n"
    assert time.monotonic() - started < 10
    assert slow_clients.open_count() == SLOW_CONNECTIONS


def test_a_head_that_never_ends_is_closed_after_the_header_timeout(tmp_path: Path, git_env: dict[str, str]) -> None:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env,
                       extra_env={"GITSERVER_HTTP_HEADER_TIMEOUT": "2", "GITSERVER_HTTP_READ_TIMEOUT": "2"})
    try:
        sock = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, no answer
        assert 1.5 < time.monotonic() - started < 5
        sock.close()
        # A client that sends its head in pieces, in time, is answered normally.
        sock = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        for piece in (b"GET /healthz HT", b"TP/1.1\r\nHost: x\r", b"\nConnection: close\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b'{"status": "ok"}' in answer
        sock.close()
        # A body that stalls half-way frees its thread after the read timeout: 408.
        sock = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        sock.sendall(b"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + srv.admin_token.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"name\": ")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 1.5 < time.monotonic() - started < 6
        sock.close()
        assert "Traceback" not in srv.logs()
    finally:
        srv.stop()
