"""Functional fixtures: the real ``gitserver serve`` on free loopback ports, real git, the real
OpenSSH client, on SQLite and on PostgreSQL.

``server`` is session-scoped and parametrized by backend, so every functional test that uses
it runs twice (SQLite, then PostgreSQL) against two long-lived servers. Tests isolate
themselves by creating their own tenant (``server.new_tenant()``). Tests that must kill or
reconfigure a server start a private one with ``start_server``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TEST_PROCESS_ONLY_ENV, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_names)}"


@dataclasses.dataclass
class User:
    tenant: str
    name: str
    role: str
    key_path: Path
    public_key: str
    fingerprint: str
    token: str
    id: int


class GitServer:
    """A running gitserver (``serve`` or separate parts) and helpers to drive it."""

    def __init__(self, data_dir: Path, db_url: str, git_env: Mapping[str, str],
                 extra_env: Mapping[str, str] | None = None, parts: tuple[str, ...] = ("serve",),
                 python: str = sys.executable, cwd: Path = REPO_ROOT) -> None:
        # ``python`` and ``cwd`` default to this checkout; the installed-package test passes a
        # fresh venv's interpreter and a directory outside the source tree.
        self.python = python
        self.cwd = cwd
        self.data_dir = data_dir
        self.db_url = db_url
        self.ssh_port = free_port()
        self.http_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.ssh_base = f"ssh://git@127.0.0.1:{self.ssh_port}"
        self.git_env = dict(git_env)
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith("GITSERVER_") and k not in TEST_PROCESS_ONLY_ENV},
            "GITSERVER_DATA_DIR": str(data_dir),
            "GITSERVER_DATABASE_URL": db_url,
            "GITSERVER_SSH_HOST": "127.0.0.1",
            "GITSERVER_SSH_PORT": str(self.ssh_port),
            "GITSERVER_HTTP_HOST": "127.0.0.1",
            "GITSERVER_HTTP_PORT": str(self.http_port),
            "GITSERVER_ALLOW_PRIVATE_NETWORKS": "1",
            # Only used where jobs cannot be sandboxed: as root (CI) they run in the sandbox
            # anyway, and test_sandbox.py fails if they do not; as another user the functional
            # build and Repour tests still need their jobs to run.
            "GITSERVER_BUILD_ALLOW_UNISOLATED": "1",
            "GITSERVER_WORKERS": "2",
            "GITSERVER_HTTP_WORKERS": "2",
            "GITSERVER_JOB_POLL_INTERVAL": "0.2",
            "GITSERVER_SSH_SHUTDOWN_GRACE": "5",
            **(extra_env or {}),
        }
        self.parts = parts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = data_dir.parent / f"logs-{data_dir.name}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._runtime: Any = None
        self.admin_token = ""
        self.keys_dir = Path(tempfile.mkdtemp(prefix="gitserver-keys-"))

    # --- lifecycle ---------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.python, "-m", "gitserver", *args], env=self.env, text=True,
                                capture_output=True, input=input, timeout=120, cwd=self.cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"gitserver {' '.join(args)} failed: {result.stderr}")
        return result

    def spawn(self, part: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{part}-{len(self.procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([self.python, "-m", "gitserver", part], env={**self.env, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                start_new_session=True)
        log.close()
        return proc

    def start(self) -> GitServer:
        self.cli("init")
        self.admin_token = self.cli("token", "create", "--site-admin", "--name", "tests").stdout.strip()
        for part in self.parts:
            self.procs[part] = self.spawn(part)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0, ssh_port: int | None = None, http_url: str | None = None,
                   what: str = "gitserver to accept SSH and HTTP") -> None:
        """Wait until the SSH port answers with a banner and the API's /healthz with 200 (by
        default this server's own ports; replicas pass theirs); fail at once if a part died."""
        ssh_port = ssh_port or self.ssh_port
        http_url = http_url or self.http_url

        def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", ssh_port), timeout=1) as sock:
                    if not sock.recv(8).startswith(b"SSH-"):
                        return False
                return requests.get(http_url + "/healthz", timeout=2).status_code == 200
            except OSError:
                return False

        wait_for(ready, timeout=timeout, interval=0.2, what=what)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._runtime is not None:
            self._runtime.dispose()

    # --- direct database access (the same code the CLI mirrors use) ------------------------

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            from gitserver import config
            from gitserver.runtime import Runtime

            self._runtime = Runtime.create(config.load(environ=self.env), pool_size=2)
        return self._runtime

    @contextlib.contextmanager
    def db(self) -> Iterator[Any]:
        """A session in a transaction that commits on exit."""
        from gitserver.db.session import transaction

        with transaction(self.runtime.sessions) as session:
            yield session

    # --- objects -------------------------------------------------------------------------------

    def new_tenant(self) -> str:
        from gitserver.admin import tenants

        name = unique("t")
        with self.db() as session:
            tenants.create_tenant(session, name)
        return name

    def new_key(self, name: str = "key") -> tuple[Path, str]:
        path = self.keys_dir / unique(name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                       check=True)
        return path, path.with_suffix(".pub").read_text().strip()

    def new_user(self, tenant: str, role: str = "member", name: str | None = None) -> User:
        from gitserver.admin import keys, tenants, tokens, users

        name = name or unique("u")
        key_path, public = self.new_key(name)
        with self.db() as session:
            user = users.create_user(session, tenants.get_tenant(session, tenant), name, role)
            key = keys.add_user_key(session, user, public, "test key")
            _row, token = tokens.create_token(session, user=user, name="tests")
            return User(tenant=tenant, name=name, role=role, key_path=key_path, public_key=public,
                        fingerprint=key.fingerprint, token=token, id=user.id)

    def new_repo(self, tenant: str, name: str | None = None, visibility: str = "private",
                 grants: Mapping[str, str] | None = None, builds: bool = False) -> str:
        """Create a repository; ``grants`` maps user names to permissions."""
        from gitserver.admin import grants as grant_ops  # ``grants`` is the parameter
        from gitserver.admin import repos, tenants, users

        name = name or unique("r")
        with self.db() as session:
            t = tenants.get_tenant(session, tenant)
            repo = repos.create_repo(session, self.runtime.store, t, name, visibility=visibility)
            repo.builds_enabled = builds
            for user_name, permission in (grants or {}).items():
                grant_ops.set_grant(session, repo, permission, user=users.get_user(session, t, user_name))
        return name

    def repo_url(self, tenant: str, repo: str) -> str:
        return f"{self.ssh_base}/{tenant}/{repo}.git"

    def repo_path(self, tenant: str, repo: str) -> Path:
        return self.data_dir / "repos" / tenant / f"{repo}.git"

    # --- clients -------------------------------------------------------------------------------

    def ssh_command(self, key_path: Path) -> list[str]:
        return ["ssh", "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"]

    def client_env(self, user: User | Path) -> dict[str, str]:
        key = user.key_path if isinstance(user, User) else user
        return {**self.git_env, "GIT_SSH_COMMAND": " ".join(self.ssh_command(key))}

    def git(self, user: User | Path, *args: str, cwd: Path | str | None = None, check: bool = True,
            timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real git client as ``user`` (through the real OpenSSH client)."""
        result = subprocess.run(["git", *args], cwd=cwd, env=self.client_env(user), text=True,
                                capture_output=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def ssh(self, user: User | Path, *args: str, timeout: float = 60,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run the real OpenSSH client against the daemon: ``ssh [options] git@host args``."""
        key = user.key_path if isinstance(user, User) else user
        argv = [*self.ssh_command(key), "-p", str(self.ssh_port), *options, "git@127.0.0.1", *args]
        return subprocess.run(argv, env=self.git_env, text=True, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def api(self, method: str, path: str, json: Any = None, token: str | None = None,
            headers: Mapping[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """Call the HTTP API; the site-admin token unless ``token`` is given ("" = none)."""
        token = self.admin_token if token is None else token
        all_headers = {"Authorization": f"Bearer {token}"} if token else {}
        all_headers.update(headers or {})
        return requests.request(method, self.http_url + path, json=json, headers=all_headers,
                                timeout=30, **kwargs)


def start_server(tmp_path: Path, db_url: str, git_env: Mapping[str, str],
                 extra_env: Mapping[str, str] | None = None,
                 parts: tuple[str, ...] = ("serve",)) -> GitServer:
    """Start a private server (caller stops it). ``parts`` may be ("ssh", "api", "worker")."""
    data_dir = tmp_path / "data"
    return GitServer(data_dir, db_url, git_env, extra_env, parts).start()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           git_env: dict[str, str]) -> Iterator[GitServer]:
    """The shared server of the test session, on each database backend."""
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    srv = GitServer(root / "data", db_url, git_env)
    try:
        srv.start()
    except Exception:
        srv.stop()
        raise
    yield srv
    srv.stop()


def make_repo(path: Path, git_env: Mapping[str, str], files: Mapping[str, str | bytes] | None = None,
              message: str = "initial") -> Path:
    """A working repository with one commit of ``files`` (pinned author and date)."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], env=dict(git_env), check=True)
    commit_files(path, git_env, files or {"README.md": "hello\n"}, message)
    return path


def commit_files(path: Path, git_env: Mapping[str, str], files: Mapping[str, str | bytes],
                 message: str = "change") -> str:
    """Write ``files`` into the work tree, commit, return the new commit id."""
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    env = dict(git_env)
    subprocess.run(["git", "add", "-A"], cwd=path, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=path, env=env, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
