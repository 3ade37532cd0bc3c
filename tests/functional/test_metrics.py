"""/metrics on the real API (gunicorn, two workers) and the Graphite export."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_for
from tests.functional.conftest import GitServer


def _sample(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


class FakeGraphite:
    """A TCP listener on loopback that collects the plaintext lines it receives."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.lines.extend(data.decode().splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def api_only(tmp_path: Path, git_env: dict[str, str]) -> Iterator[tuple[GitServer, FakeGraphite]]:
    """``gitserver api`` alone (SQLite), with Graphite export pointed at a fake listener."""
    graphite = FakeGraphite()
    srv = GitServer(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env,
                    extra_env={"GRAPHITE_SERVER": "127.0.0.1", "GRAPHITE_PORT": str(graphite.port),
                               "GRAPHITE_KEY": "ops.test"}, parts=())
    srv.cli("init")
    srv.procs["api"] = srv.spawn("api")

    def up() -> bool:
        if srv.procs["api"].poll() is not None:
            raise AssertionError(f"api exited:\n{srv.logs()}")
        try:
            return requests.get(srv.http_url + "/healthz", timeout=2).status_code == 200
        except OSError:
            return False

    wait_for(up, timeout=60, interval=0.2, what="the API")
    try:
        yield srv, graphite
    finally:
        srv.stop()
        graphite.close()


def test_metrics_count_requests_by_route_across_workers(api_only: tuple[GitServer, FakeGraphite]) -> None:
    srv, _ = api_only
    healthz = 'gitserver_http_requests_total{method="GET",route="/healthz",status="200"}'
    before = _sample(requests.get(srv.http_url + "/metrics", timeout=5).text, healthz)
    for _ in range(10):
        assert requests.get(srv.http_url + "/healthz", timeout=5).status_code == 200
    assert requests.get(srv.http_url + "/no/such/thing/42", timeout=5).status_code == 404
    resp = requests.get(srv.http_url + "/metrics", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    # Ten requests, whichever of the two gunicorn workers served them.
    assert _sample(text, healthz) - before == 10
    assert _sample(text, 'gitserver_http_request_seconds_count{method="GET",route="/healthz"}') == before + 10
    # An unmatched path is counted under one label, never the raw path.
    assert "/no/such/thing/42" not in text
    assert _sample(text, 'gitserver_http_errors_total{class="4xx",route="unmatched"}') == 1
    assert "process_resident_memory_bytes" in text and "python_gc_collections_total" in text
    assert "gitserver_queue_depth 0.0" in text
    # The multiprocess files live in the data dir.
    assert list((srv.data_dir / "metrics").glob("counter_*.db"))


def test_graphite_receives_prefixed_lines(api_only: tuple[GitServer, FakeGraphite]) -> None:
    _, graphite = api_only
    wait_for(lambda: any(line.startswith("ops.test.") for line in graphite.lines), timeout=30,
             interval=0.2, what="a Graphite push")
    line = next(line for line in graphite.lines if line.startswith("ops.test."))
    _name, value, stamp = line.split(" ")
    float(value)
    assert abs(int(stamp) - time.time()) < 300


def _metrics(server: GitServer) -> str:
    resp = requests.get(server.http_url + "/metrics", timeout=10)
    assert resp.status_code == 200
    return resp.text


def test_ssh_traffic_is_counted(server: GitServer, tmp_path: Path) -> None:
    """A push, a refused force-push, a clone and an unknown key, as /metrics reports them."""
    from tests.functional.conftest import make_repo

    tenant = server.new_tenant()
    writer = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={writer.name: "write"})
    url = server.repo_url(tenant, repo)
    before = _metrics(server)

    work = make_repo(tmp_path / "work", server.git_env, {"a.txt": "one\n"})
    server.git(writer, "push", url, "main", cwd=work)
    server.git(writer, "commit", "--amend", "-q", "-m", "rewritten", cwd=work)  # not a descendant
    refused = server.git(writer, "push", "--force", url, "main", cwd=work, check=False)
    assert refused.returncode != 0
    server.git(writer, "clone", "-q", url, str(tmp_path / "clone"))
    stranger_key, _ = server.new_key("stranger")
    assert server.ssh(stranger_key).returncode != 0

    def grew(text: str, prefix: str) -> float:
        return _sample(text, prefix) - _sample(before, prefix)

    after = _metrics(server)
    assert grew(after, 'gitserver_git_sessions_total{service="receive-pack"}') == 2
    assert grew(after, 'gitserver_git_sessions_total{service="upload-pack"}') == 1
    assert grew(after, 'gitserver_ref_updates_refused_total{rule="non_fast_forward"}') == 1
    assert grew(after, 'gitserver_pushes_total{result="recorded"}') == 1
    assert grew(after, 'gitserver_ssh_auth_total{reason="publickey",result="success"}') >= 3
    assert grew(after, 'gitserver_ssh_auth_total{reason="unknown-key",result="failure"}') >= 1
    assert grew(after, 'gitserver_ssh_bytes_total{direction="received"}') > 0
    assert grew(after, 'gitserver_ssh_bytes_total{direction="sent"}') > 0
    assert grew(after, "gitserver_ssh_connections_total") >= 4
    assert _sample(after, "gitserver_git_children") == 0
