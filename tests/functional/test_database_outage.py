"""What clients see while the database is unreachable (docs/operations.md): the PostgreSQL
cluster of a private server is stopped under it, then started again.

SSH clients get one line saying why (a new login in the disconnect message, a command on an
existing multiplexed connection as ``ERROR:``/``error:``), the REST API, smart HTTP and the
Repour endpoints answer 503 with ``Retry-After`` and no traceback, and everything works again
once the database is back. SQLite has no server to stop: its side of the classifier is covered
by tests/unit/test_database_unreachable.py with the real sqlite3 error.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gitserver.policy.errors import DATABASE_RETRY_AFTER, DATABASE_UNREACHABLE_MESSAGE
from tests.conftest import PostgresCluster, postgres_unavailable_reason, wait_for
from tests.functional.conftest import GitServer, User, start_server

pytestmark = pytest.mark.skipif(postgres_unavailable_reason() is not None,
                                reason=f"needs PostgreSQL: {postgres_unavailable_reason()}")


@pytest.fixture
def outage(tmp_path: Path, git_env: dict[str, str]) -> Iterator[tuple[GitServer, PostgresCluster]]:
    # Durable commits: the cluster is stopped as a crash would, and the user and repository
    # made just before must survive it (the test cluster's default drops recent commits).
    cluster = PostgresCluster(durable_commits=True)
    cluster.start()
    srv = None
    try:
        srv = start_server(tmp_path, cluster.create_database(), git_env)
        yield srv, cluster
    finally:
        if srv is not None:
            srv.stop()
        cluster.stop()


def _master(srv: GitServer, user: User, control: Path) -> tuple[str, ...]:
    """Open an OpenSSH ControlMaster while the database is up: its later commands skip login."""
    options = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60")
    assert srv.ssh(user, "info", options=options).returncode == 0
    return options


def _close_master(srv: GitServer, user: User, control: Path) -> None:
    subprocess.run([*srv.ssh_command(user.key_path), "-o", f"ControlPath={control}", "-O", "exit",
                    "-p", str(srv.ssh_port), "git@127.0.0.1"], capture_output=True, timeout=30)


def _assert_unavailable(resp: requests.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text)
    assert resp.headers.get("Retry-After") == str(DATABASE_RETRY_AFTER)
    assert "Traceback" not in resp.text and "psycopg" not in resp.text.lower()


def test_clients_are_told_the_database_is_unreachable(outage: tuple[GitServer, PostgresCluster],
                                                      tmp_path: Path) -> None:
    srv, cluster = outage
    tenant = srv.new_tenant()
    user = srv.new_user(tenant)
    repo = srv.new_repo(tenant, grants={user.name: "write"})
    control = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp")) / "s"
    options = _master(srv, user, control)
    try:
        cluster.stop_server()

        # A new login: the key lookup needs the database; the reason comes as the disconnect.
        clone = srv.git(user, "clone", srv.repo_url(tenant, repo), str(tmp_path / "c1"), check=False,
                        timeout=60)
        assert clone.returncode != 0
        assert f":7: {DATABASE_UNREACHABLE_MESSAGE}" in clone.stderr, clone.stderr  # SERVICE_NOT_AVAILABLE

        # A git command on the connection that is already logged in: one ERROR: line, 128.
        upload = srv.ssh(user, f"git-upload-pack '{tenant}/{repo}'", options=options)
        assert upload.returncode == 128, upload.stderr
        assert upload.stderr.strip() == f"ERROR: {DATABASE_UNREACHABLE_MESSAGE}"

        # A self-service command on it: one error: line, 1.
        listing = srv.ssh(user, "repo list", options=options)
        assert listing.returncode == 1, listing.stderr
        assert listing.stderr.strip() == f"error: {DATABASE_UNREACHABLE_MESSAGE}"

        api = srv.api("GET", f"/api/v1/tenants/{tenant}/repos", token=user.token)
        _assert_unavailable(api)
        assert api.json()["description"] == DATABASE_UNREACHABLE_MESSAGE

        smart = requests.get(f"{srv.http_url}/git/{tenant}/{repo}.git/info/refs?service=git-upload-pack",
                             auth=(user.name, user.token), timeout=30)
        _assert_unavailable(smart)
        # Plain text, as every smart HTTP refusal: git shows such a body to its user.
        assert smart.headers["Content-Type"].startswith("text/plain")
        assert smart.text == DATABASE_UNREACHABLE_MESSAGE + "\n"
        http_clone = subprocess.run(["git", "clone", f"{srv.http_url}/git/{tenant}/{repo}.git", str(tmp_path / "h1")],
                                    env=srv.git_env, capture_output=True, text=True, timeout=60)
        assert http_clone.returncode != 0
        assert f"remote: {DATABASE_UNREACHABLE_MESSAGE}" in http_clone.stderr, http_clone.stderr

        repour = srv.api("POST", "/clone", token=user.token,
                         json={"type": "git", "originRepoUrl": "https://example.invalid/x.git",
                               "targetRepoUrl": srv.repo_url(tenant, repo)})
        _assert_unavailable(repour)
        assert repour.json()["desc"] == DATABASE_UNREACHABLE_MESSAGE
        assert repour.json()["error_type"] == "unavailable"

        cluster.start_server()
        wait_for(lambda: srv.api("GET", f"/api/v1/tenants/{tenant}/repos", token=user.token).status_code == 200,
                 timeout=60, interval=0.5, what="the API to answer again")
        assert srv.git(user, "clone", srv.repo_url(tenant, repo), str(tmp_path / "c2")).returncode == 0
        assert srv.ssh(user, "repo list", options=options).returncode == 0
        smart = requests.get(f"{srv.http_url}/git/{tenant}/{repo}.git/info/refs?service=git-upload-pack",
                             auth=(user.name, user.token), timeout=30)
        assert smart.status_code == 200
    finally:
        _close_master(srv, user, control)
