"""Client compatibility: every client clones, fetches, pushes a new branch, has a force push
refused and makes a shallow clone, over SSH and over the read-only HTTP endpoint (where every
push is refused). docs/compatibility.md shows the same matrix as a table.

Clients: git with protocol v0, v1 and v2 (through OpenSSH); libgit2 (pygit2) with ed25519,
ECDSA and RSA keys; dulwich over paramiko; and a JSch-era algorithm set (paramiko limited to
what JSch 0.1.54 speaks). The non-git clients run in their own process
(tests/functional/compat_clients.py), so a client crash fails its test only.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import REPO_ROOT, GitServer, User, commit_files, make_repo

REFUSED_FORCE = "non-fast-forward pushes are not allowed"
JAVA_DIR = Path("/usr/share/java")
JGIT_JARS = ("org.eclipse.jgit.jar", "org.eclipse.jgit.pgm.jar", "org.eclipse.jgit.lfs.jar",
             "org.eclipse.jgit.archive.jar", "org.eclipse.jgit.http.apache.jar",
             "org.eclipse.jgit.ui.jar", "jsch.jar", "args4j.jar", "commons-compress.jar",
             "slf4j-api.jar", "slf4j-nop.jar", "httpclient.jar", "httpcore.jar",
             "commons-logging.jar", "commons-codec.jar", "javaewah.jar")
HAVE_JGIT = shutil.which("java") is not None and all((JAVA_DIR / j).exists() for j in JGIT_JARS)


def _libgit2_has_ssh() -> bool:
    """pygit2 1.21 dropped GIT_FEATURE_SSH; the flag is in pygit2.features (enums.Feature)."""
    import pygit2
    from pygit2.enums import Feature

    return bool(pygit2.features & Feature.SSH)


LIBGIT2_SSH = pytest.mark.skipif(not _libgit2_has_ssh(),
                                 reason="this pygit2 build's libgit2 has no SSH transport")


@dataclasses.dataclass(frozen=True)
class Client:
    name: str
    kind: str  # "git" or a compat_clients client
    key_type: str = "ed25519"
    protocol: int = 2

    def __str__(self) -> str:
        return self.name


CLIENTS = [
    Client("git-v0", "git", protocol=0),
    Client("git-v1", "git", protocol=1),
    Client("git-v2", "git", protocol=2),
    pytest.param(Client("libgit2-ed25519", "libgit2", "ed25519"), id="libgit2-ed25519",
                 marks=LIBGIT2_SSH),
    pytest.param(Client("libgit2-ecdsa", "libgit2", "ecdsa"), id="libgit2-ecdsa", marks=LIBGIT2_SSH),
    pytest.param(Client("libgit2-rsa", "libgit2", "rsa"), id="libgit2-rsa", marks=LIBGIT2_SSH),
    Client("dulwich-paramiko", "dulwich", "ed25519"),
    Client("jsch-era", "jsch-era", "ecdsa"),
    # Debian's JGit 4.11 with JSch 0.1.54: an RSA key in PEM form, signed with SHA-1 ssh-rsa.
    pytest.param(Client("jgit-4.11-jsch", "jgit", "rsa-pem"), id="jgit-4.11-jsch",
                 marks=pytest.mark.skipif(not HAVE_JGIT, reason="JGit 4.11 (Debian jgit-cli) is "
                                          "not installed; ./dev test installs it as root")),
]


@dataclasses.dataclass
class Setup:
    server: GitServer
    user: User
    key: Path
    tenant: str
    repo: str
    work: Path  # the maintainer's own working copy (git), which pushes "upstream" changes

    def url(self, transport: str) -> str:
        if transport == "ssh":
            return self.server.repo_url(self.tenant, self.repo)
        return f"{self.server.http_url}/git/{self.tenant}/{self.repo}.git"

    def server_ref(self, ref: str) -> str:
        return _git(self.server.repo_path(self.tenant, self.repo), self.server.git_env,
                    "rev-parse", ref)


def _git(cwd: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def _add_key(server: GitServer, user: User, key_type: str) -> Path:
    if key_type == "ed25519":
        return user.key_path
    from gitserver.admin import keys, tenants, users

    path = server.keys_dir / f"{user.name}-{key_type}"
    if not path.exists():
        kind, _, form = key_type.partition("-")
        options = (["-b", "3072"] if kind == "rsa" else []) + (["-m", "PEM"] if form else [])
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *options, "-N", "", "-C", path.name,
                        "-f", str(path)], check=True)
        with server.db() as session:
            row = users.get_user(session, tenants.get_tenant(session, user.tenant), user.name)
            keys.add_user_key(session, row, path.with_suffix(".pub").read_text().strip(), key_type)
    return path


@pytest.fixture
def setup(server: GitServer, tmp_path: Path) -> Setup:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")  # the HTTP side reads anonymously
    work = make_repo(tmp_path / "upstream", server.git_env, {"README.md": "one\n"})
    commit_files(work, server.git_env, {"src/a.txt": "two\n"})
    server.git(user, "push", server.repo_url(tenant, repo), "main", cwd=work)
    return Setup(server, user, user.key_path, tenant, repo, work)


class Runner:
    """One client's clone / fetch / push, as the client itself does them."""

    def __init__(self, client: Client, setup: Setup) -> None:
        self.client = client
        self.setup = setup
        self.key = _add_key(setup.server, setup.user, client.key_type)

    def _compat(self, op: str, *args: str, check: bool = True) -> dict[str, object]:
        argv = [sys.executable, "-m", "tests.functional.compat_clients", self.client.kind, op,
                "--key", str(self.key), *args]
        result = subprocess.run(argv, cwd=REPO_ROOT, env=self.setup.server.git_env,
                                capture_output=True, text=True, timeout=300)
        failed = result.returncode != 0
        assert not (failed and check), (f"{self.client} {op} failed (exit {result.returncode}):\n"
                                        f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        if failed and result.returncode != 3:  # a crash, not an error the client reported
            raise AssertionError(f"{self.client} {op} crashed (exit {result.returncode}):\n"
                                 f"{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def _jgit(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """JGit's command line (its Debian wrapper lacks the LFS jar) with a HOME of its own:
        JSch reads ~/.ssh/config for the key and takes the unknown host key."""
        home = self.key.parent / f"jgit-home-{self.key.name}"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh" / "config").write_text(
            f"Host 127.0.0.1\n  User git\n  IdentityFile {self.key}\n  StrictHostKeyChecking no\n")
        classpath = ":".join(str(JAVA_DIR / jar) for jar in JGIT_JARS)
        argv = ["java", f"-Duser.home={home}", "-cp", classpath, "org.eclipse.jgit.pgm.Main", *args]
        return subprocess.run(argv, cwd=cwd, env={**self.setup.server.git_env, "HOME": str(home)},
                              capture_output=True, text=True, timeout=300)

    def _git(self, *args: str, cwd: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        key = self.key
        return self.setup.server.git(key, "-c", f"protocol.version={self.client.protocol}", *args,
                                     cwd=cwd, check=check)

    def clone(self, url: str, dest: Path, depth: int | None = None) -> None:
        if self.client.kind == "git":
            self._git("clone", "-q", *(["--depth", str(depth)] if depth else []), url, str(dest))
        elif self.client.kind == "jgit":
            assert depth is None, "JGit 4.11 cannot make shallow clones"
            result = self._jgit("clone", url, str(dest))
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            self._compat("clone", "--url", url, "--dest", str(dest),
                         *(["--depth", str(depth)] if depth else []))

    def fetch(self, url: str, dest: Path) -> dict[str, str]:
        """Fetch every branch; returns {refs/heads/<b>: commit} as the client saw them."""
        if self.client.kind == "git":
            self._git("fetch", "-q", url, "+refs/heads/*:refs/remotes/origin/*", cwd=dest)
            out = self._git("for-each-ref", "--format=%(refname) %(objectname)",
                            "refs/remotes/origin/", cwd=dest).stdout
            return {line.split()[0].replace("refs/remotes/origin/", "refs/heads/"): line.split()[1]
                    for line in out.splitlines()}
        if self.client.kind == "jgit":
            fetched = self._jgit("fetch", url, "+refs/heads/*:refs/remotes/origin/*", cwd=dest)
            assert fetched.returncode == 0, fetched.stdout + fetched.stderr
            out = _git(dest, self.setup.server.git_env, "for-each-ref",
                       "--format=%(refname) %(objectname)", "refs/remotes/origin/")
            return {line.split()[0].replace("refs/remotes/origin/", "refs/heads/"): line.split()[1]
                    for line in out.splitlines()}
        result = self._compat("fetch", "--url", url, "--dest", str(dest))["refs"]
        return {ref.replace("refs/remotes/origin/", "refs/heads/"): oid
                for ref, oid in result.items()}  # type: ignore[union-attr]

    def push(self, url: str, dest: Path, refspec: str) -> str | None:
        """Push; None when accepted, else the reason the client reports."""
        if self.client.kind == "git":
            result = self._git("push", url, refspec, cwd=dest, check=False)
            return None if result.returncode == 0 else result.stderr
        if self.client.kind == "jgit":
            pushed = self._jgit("push", url, refspec, cwd=dest)
            output = pushed.stdout + pushed.stderr
            return output if pushed.returncode != 0 or "rejected" in output else None
        answer = self._compat("push", "--url", url, "--dest", str(dest), "--refspec", refspec,
                              check=False)
        if "error" in answer:
            return str(answer["error"])
        reasons = list(answer["rejected"].values())  # type: ignore[union-attr]
        return " ".join(reasons) if reasons else None


def _commit_in(dest: Path, env: dict[str, str], name: str) -> str:
    (dest / name).write_text(f"{name}\n")
    _git(dest, env, "add", name)
    _git(dest, env, "commit", "-q", "-m", f"add {name}")
    return _git(dest, env, "rev-parse", "HEAD")


@pytest.mark.parametrize("client", CLIENTS, ids=str)
def test_client_over_ssh(client: Client, setup: Setup, tmp_path: Path) -> None:
    env = setup.server.git_env
    run = Runner(client, setup)
    url = setup.url("ssh")
    clone = tmp_path / "clone"

    run.clone(url, clone)
    assert _git(clone, env, "rev-parse", "HEAD") == setup.server_ref("main")

    upstream = commit_files(setup.work, env, {"upstream.txt": "new\n"})
    setup.server.git(setup.user, "push", url, "main", cwd=setup.work)
    assert run.fetch(url, clone)["refs/heads/main"] == upstream

    _git(clone, env, "checkout", "-q", "-b", f"topic-{client.name}", upstream)
    mine = _commit_in(clone, env, "mine.txt")
    assert run.push(url, clone, f"refs/heads/topic-{client.name}:refs/heads/topic-{client.name}") is None
    assert setup.server_ref(f"topic-{client.name}") == mine

    _git(clone, env, "commit", "-q", "--amend", "-m", "rewritten")
    refused = run.push(url, clone, f"+refs/heads/topic-{client.name}:refs/heads/topic-{client.name}")
    assert refused is not None and REFUSED_FORCE in refused
    assert setup.server_ref(f"topic-{client.name}") == mine

    if client.kind != "jgit":  # JGit gained shallow clones in 6.3
        shallow = tmp_path / "shallow"
        run.clone(url, shallow, depth=1)
        assert _git(shallow, env, "rev-list", "--count", "HEAD") == "1"
        assert _git(shallow, env, "rev-parse", "HEAD") == upstream


def _http_clients() -> list[object]:
    """One of each client: over HTTP no key or SSH algorithm is involved."""
    chosen = []
    for entry in CLIENTS:
        client = entry.values[0] if hasattr(entry, "values") else entry
        if client.kind in ("git", "jgit") or client.key_type == "ed25519":  # type: ignore[union-attr]
            chosen.append(entry)
    return chosen


@pytest.mark.parametrize("client", _http_clients(), ids=str)
def test_client_over_read_only_http(client: Client, setup: Setup, tmp_path: Path) -> None:
    env = setup.server.git_env
    run = Runner(client, setup)
    url = setup.url("http")
    clone = tmp_path / "clone"

    run.clone(url, clone)
    assert _git(clone, env, "rev-parse", "HEAD") == setup.server_ref("main")

    upstream = commit_files(setup.work, env, {"upstream.txt": "new\n"})
    setup.server.git(setup.user, "push", setup.url("ssh"), "main", cwd=setup.work)
    assert run.fetch(url, clone)["refs/heads/main"] == upstream

    _git(clone, env, "checkout", "-q", "-b", "topic", upstream)
    _commit_in(clone, env, "mine.txt")
    assert run.push(url, clone, "refs/heads/topic:refs/heads/topic") is not None  # read-only
    assert "refs/heads/topic" not in _git(setup.server.repo_path(setup.tenant, setup.repo), env,
                                          "for-each-ref", "refs/heads/")

    if client.kind != "jgit":
        shallow = tmp_path / "shallow"
        run.clone(url, shallow, depth=1)
        assert _git(shallow, env, "rev-list", "--count", "HEAD") == "1"
