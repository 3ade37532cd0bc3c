"""Repour-compatible limits with the real server (docs/limits.md): synchronous /clone and /adjust
runs are capped per API process (429 with Retry-After); callback mode is not."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, start_server
from tests.functional.test_repour import origin_repo, post, setup_repo, urls


class HangingOrigin:
    """A loopback "git server" that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/origin.git"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def one_slot(tmp_path: Path, git_env: dict[str, str]) -> Iterator[GitServer]:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env, extra_env={
        "GITSERVER_REPOUR_MAX_SYNC_RUNS": "1", "GITSERVER_HTTP_WORKERS": "1",
        "GITSERVER_REPOUR_GIT_TIMEOUT": "60"})
    try:
        yield srv
    finally:
        srv.stop()


def test_synchronous_runs_over_the_cap_get_429(one_slot: GitServer, tmp_path: Path, git_env: dict[str, str]) -> None:
    srv = one_slot
    tenant, repo, user = setup_repo(srv)
    target = urls(srv, tenant, repo)["readwrite"]
    hanging = HangingOrigin()
    first: list[requests.Response] = []
    runner = threading.Thread(target=lambda: first.append(post(
        srv, "/clone", {"type": "git", "originRepoUrl": hanging.url, "targetRepoUrl": target, "ref": "main"},
        token=user.token)), daemon=True)
    try:
        runner.start()
        wait_for(lambda: hanging.conns, timeout=30, what="the first clone to reach its origin")
        origin = origin_repo(tmp_path, git_env)
        spec = {"type": "git", "originRepoUrl": str(origin), "targetRepoUrl": target, "ref": "main"}
        refused = post(srv, "/clone", spec, token=user.token)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "30"
        assert refused.json()["error_type"] == "too_many_requests"
        assert "synchronous /clone and /adjust runs are already running" in refused.json()["desc"]
        # Callback mode runs as a job: not capped.
        queued = post(srv, "/clone", {**spec, "callback": {"url": "http://127.0.0.1:9/done"}}, token=user.token)
        assert queued.status_code == 202, queued.text
    finally:
        hanging.close()
    runner.join(timeout=90)
    assert first and first[0].status_code == 400  # its origin went away

    # The callback-mode clone runs as a job meanwhile; two clones pushing the same refs into
    # one repository at once would race (one is refused: "another push won").
    def clones_done() -> bool:
        items = srv.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/pipelines").json()["items"]
        return bool(items) and all(p["status"] in ("succeeded", "failed", "cancelled") for p in items)

    wait_for(clones_done, timeout=60, what="the callback-mode clone to finish")
    # The slot is free again.
    again = post(srv, "/clone", spec, token=user.token)
    assert again.status_code == 200, again.text
