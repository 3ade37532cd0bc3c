"""Fixtures shared by unit and functional tests: a pinned git environment and PostgreSQL.

PostgreSQL: a throwaway cluster is started once per test session with the machine's
``initdb``/``pg_ctl`` (as the ``postgres`` user when we are root, since postgres refuses to run
as root). Where no PostgreSQL binary exists, PostgreSQL-parametrized tests are skipped with that
reason; CI has the binaries, so there they always run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# prometheus_client picks its value class (multiprocess or not) once, when it is first
# imported, from PROMETHEUS_MULTIPROC_DIR; a test that set the variable only for itself left
# every later metric in this process pointing at a directory that no longer existed. Give the
# whole test process one directory before anything imports the client. Servers started by the
# tests get their own (tests/functional/conftest.py drops this variable from their env).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gitserver-test-metrics-"))
TEST_PROCESS_ONLY_ENV = ("PROMETHEUS_MULTIPROC_DIR",)
# The refs the server writes in every repository beside the pushed ones: the reference log and
# the attestation notes (docs/provenance.md). Tests comparing a repository's refs leave them out.
SERVER_REFS = ("refs/gitserver/", "refs/notes/attestations")

PINNED_DATE = "2020-01-01T00:00:00Z"
_db_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def git_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME with a fixed git identity, so fixture repositories are reproducible."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Author\n\temail = author@example.com\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
        "[protocol]\n\tversion = 2\n")
    return home


@pytest.fixture(scope="session")
def git_env(git_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "GITSERVER_")) and k not in TEST_PROCESS_ONLY_ENV}
    env.update(HOME=str(git_home), GIT_CONFIG_NOSYSTEM="1", LANG="C", LC_ALL="C",
               GIT_AUTHOR_DATE=PINNED_DATE, GIT_COMMITTER_DATE=PINNED_DATE,
               GIT_AUTHOR_NAME="Test Author", GIT_AUTHOR_EMAIL="author@example.com",
               GIT_COMMITTER_NAME="Test Author", GIT_COMMITTER_EMAIL="author@example.com",
               GIT_TERMINAL_PROMPT="0")
    return env


class PostgresCluster:
    """A PostgreSQL server on a free loopback port with trust auth, for tests only."""

    def __init__(self, durable_commits: bool = False) -> None:
        # synchronous_commit=off (the fast default here) acknowledges a commit before its WAL
        # is written, so a crash stop loses the last ones: a test that crashes the server and
        # counts what was committed needs durable commits, as production has.
        self.durable_commits = durable_commits
        self.root = Path(tempfile.mkdtemp(prefix="gitserver-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def start(self) -> None:
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        result = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                           "--no-sync", "-E", "UTF8")
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        self.start_server()

    def start_server(self) -> None:
        commits = "on" if self.durable_commits else "off"
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit={commits} -c full_page_writes=off -c max_connections=300")
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                           "-t", "60", "-o", options, "start")
        if result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log}")

    def stop_server(self) -> None:
        """Stop the server as a crash would (``-m immediate``); the cluster stays."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"gs_{os.getpid()}_{next(_db_counter)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_unavailable_reason() -> str | None:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        return "no PostgreSQL binaries (initdb, pg_ctl) on PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    reason = postgres_unavailable_reason()
    if reason:
        print(f"\nSKIPPING PostgreSQL tests: {reason}")
        pytest.skip(reason)
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend (function scope)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
