"""Repour's /clone and /adjust with ``sync`` bring the origin's Git LFS objects along, on SQLite
and PostgreSQL, with the real git-lfs client on both ends.

The origin is another repository of the same running server, reached over its read-only smart
HTTP URL on a loopback port: its LFS batch API is the real one (git-lfs pushed the objects
there), and the target repository does not hold them until the sync fetches them over HTTP (a
repository holds only the objects recorded for it, whatever the store has). A hostile origin
is a plain bare repository served over dumb HTTP by a small server in this test, whose batch
answer points the download at an address the guard refuses.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from tests.conftest import free_port
from tests.functional.conftest import GitServer, User
from tests.functional.lfs_support import (
    lfs_home,
    lfs_worktree,
    oid,
    pushed_lfs_repo,
    require_git_lfs,
    run,
    ssh_env,
    token_url,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _git_lfs() -> None:
    require_git_lfs()


def repour(server: GitServer, path: str, body: dict[str, Any], user: User) -> requests.Response:
    return requests.post(server.http_url + path, json=body, headers={"Authorization": f"Bearer {user.token}"},
                         timeout=120)


def held_oids(server: GitServer, tenant: str, repo: str) -> set[str]:
    from gitserver.db import models

    with server.db() as session:
        repo_id = session.scalar(select(models.Repository.id).join(models.Tenant).where(
            models.Tenant.name == tenant, models.Repository.name == repo))
        return set(session.scalars(select(models.LfsObject.oid).where(models.LfsObject.repo_id == repo_id)))


def refs_of(server: GitServer, tenant: str, repo: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", str(server.repo_path(tenant, repo)), "for-each-ref",
                          "--format=%(refname)", "refs/heads", "refs/tags"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_clone_and_adjust_bring_the_lfs_objects(server: GitServer, tmp_path: Path, git_env: dict[str, str]) -> None:
    env = lfs_home(tmp_path, git_env)
    first = b"first model " * 30_000
    # A private origin: the sync sends the credentials of the origin URL to its LFS endpoint.
    pushed = pushed_lfs_repo(server, tmp_path, env, {"model.bin": first})
    tenant, user, origin, work = pushed.tenant, pushed.user, pushed.repo, pushed.work
    target = server.new_repo(tenant, grants={user.name: "write"})
    origin_url = token_url(server, user, f"/git/{tenant}/{origin}.git")
    internal = {"readwrite": server.repo_url(tenant, target),
                "readonly": f"{server.http_url}/git/{tenant}/{target}.git"}

    cloned = repour(server, "/clone", {"type": "git", "originRepoUrl": origin_url,
                                       "targetRepoUrl": internal["readwrite"]}, user)
    assert cloned.status_code == 200, cloned.text
    assert held_oids(server, tenant, target) == {oid(first)}
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", token_url(server, user, f"/git/{tenant}/{target}.git"), str(clone)], env)
    assert (clone / "model.bin").read_bytes() == first

    # /adjust with sync: a new commit upstream, its new object comes along, and the tag the
    # build clones has the content.
    second = b"second model " * 20_000
    (work / "other.bin").write_bytes(second)
    run(["git", "add", "other.bin"], env, cwd=work)
    run(["git", "commit", "-q", "-m", "another"], env, cwd=work)
    run(["git", "push", "-q", server.repo_url(tenant, origin), "main"], ssh_env(server, user, env), cwd=work)
    adjusted = repour(server, "/adjust", {"ref": "main", "originRepoUrl": origin_url, "sync": True,
                                          "internal_url": internal}, user)
    assert adjusted.status_code == 200, adjusted.text
    tag = adjusted.json()["tag"]
    assert held_oids(server, tenant, target) == {oid(first), oid(second)}
    build = tmp_path / "build"
    run(["git", "clone", "-q", "--depth", "1", "--branch", tag,
         token_url(server, user, f"/git/{tenant}/{target}.git"), str(build)], env)
    assert (build / "model.bin").read_bytes() == first and (build / "other.bin").read_bytes() == second
    assert user.token not in adjusted.text


def test_an_object_missing_at_the_origin_fails_the_clone_before_any_ref(
        server: GitServer, tmp_path: Path, git_env: dict[str, str]) -> None:
    env = lfs_home(tmp_path, git_env)
    kept, skipped = b"kept " * 10_000, b"never uploaded " * 10_000
    pushed = pushed_lfs_repo(server, tmp_path, env, {"kept.bin": kept}, visibility="public")
    tenant, user, origin, work = pushed.tenant, pushed.user, pushed.repo, pushed.work
    target = server.new_repo(tenant, grants={user.name: "write"})
    (work / "skipped.bin").write_bytes(skipped)
    run(["git", "add", "skipped.bin"], env, cwd=work)
    run(["git", "commit", "-q", "-m", "pointer only"], env, cwd=work)
    # The pointer lands upstream, its content never does.
    run(["git", "push", "-q", server.repo_url(tenant, origin), "main"],
        {**ssh_env(server, user, env), "GIT_LFS_SKIP_PUSH": "1"}, cwd=work)

    resp = repour(server, "/clone", {"type": "git", "originRepoUrl": f"{server.http_url}/git/{tenant}/{origin}.git",
                                     "targetRepoUrl": server.repo_url(tenant, target), "ref": "main"}, user)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error_type"] == "LfsObjectMissing" and body["exit_code"] == 10, body
    assert oid(skipped) in body["desc"] and "skipped.bin" in body["desc"], body["desc"]
    assert oid(kept) not in body["desc"]
    # Nothing half-written: no ref, and the objects that did arrive are not the repository's.
    assert refs_of(server, tenant, target) == []
    assert held_oids(server, tenant, target) == set()


def test_the_objects_count_in_the_quota(server: GitServer, tmp_path: Path, git_env: dict[str, str]) -> None:
    pushed = pushed_lfs_repo(server, tmp_path, lfs_home(tmp_path, git_env), {"big.bin": b"quota " * 100_000},
                             visibility="public")
    tenant, user, origin = pushed.tenant, pushed.user, pushed.repo
    target = server.new_repo(tenant, grants={user.name: "write"})
    with server.db() as session:
        from gitserver.admin import repos, tenants

        repos.get_repo(session, tenants.get_tenant(session, tenant), target).quota_bytes = 400_000
    resp = repour(server, "/clone", {"type": "git", "originRepoUrl": f"{server.http_url}/git/{tenant}/{origin}.git",
                                     "targetRepoUrl": server.repo_url(tenant, target)}, user)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_type"] == "QuotaExceeded" and "quota_bytes of repository" in resp.json()["desc"]
    assert refs_of(server, tenant, target) == [] and held_oids(server, tenant, target) == set()


class HostileOrigin:
    """A bare repository over dumb HTTP, with an LFS batch endpoint whose download hrefs point
    where the guard must refuse to go (0.0.0.0 is never a destination, even with private
    networks allowed, as the test servers run)."""

    def __init__(self, root: Path, href: str) -> None:
        self.port = free_port()
        self.href = href
        self.requests: list[str] = []
        handler = functools.partial(self._Handler, self, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    class _Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, origin: HostileOrigin, *args: Any, **kwargs: Any) -> None:
            self.origin = origin
            super().__init__(*args, **kwargs)

        def do_POST(self) -> None:
            self.origin.requests.append(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = {"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "actions": {"download": {"href": self.origin.href}}}
                for o in body["objects"]]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.git-lfs+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile(tmp_path: Path, git_env: dict[str, str]) -> Iterator[tuple[HostileOrigin, str]]:
    env = lfs_home(tmp_path, git_env)
    work = lfs_worktree(tmp_path / "work", env, {"secret.bin": b"x" * 1000})
    served = tmp_path / "served"
    run(["git", "clone", "-q", "--bare", str(work), str(served / "evil.git")], env)
    run(["git", "update-server-info"], env, cwd=served / "evil.git")
    origin = HostileOrigin(served, "http://0.0.0.0:5432/metadata")
    try:
        yield origin, f"http://127.0.0.1:{origin.port}/evil.git"
    finally:
        origin.close()


def test_a_hostile_lfs_href_is_refused(server: GitServer, hostile: tuple[HostileOrigin, str]) -> None:
    origin, url = hostile
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    target = server.new_repo(tenant, grants={user.name: "write"})
    resp = repour(server, "/clone", {"type": "git", "originRepoUrl": url,
                                     "targetRepoUrl": server.repo_url(tenant, target)}, user)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error_type"] == "LfsOriginRefused", body
    assert "0.0.0.0" in body["desc"] and "unspecified" in body["desc"], body["desc"]
    assert origin.requests == ["/evil.git/info/lfs/objects/batch"]  # the endpoint git-lfs would use
    assert refs_of(server, tenant, target) == []


def test_the_origins_lfsconfig_and_a_nested_gitattributes(server: GitServer, tmp_path: Path,
                                                          git_env: dict[str, str]) -> None:
    """An origin served over dumb HTTP (no LFS server of its own: its batch endpoint answers an
    href the guard refuses) whose committed ``.lfsconfig`` names where its objects are, and whose
    only ``.gitattributes`` is in a subdirectory: the sync reads the pointers and asks there."""
    env = lfs_home(tmp_path, git_env)
    data = b"nested model " * 20_000
    pushed = pushed_lfs_repo(server, tmp_path, env, {"model.bin": data})
    tenant, user, work = pushed.tenant, pushed.user, pushed.work
    (work / "assets").mkdir()
    run(["git", "mv", ".gitattributes", "model.bin", "assets/"], env, cwd=work)
    lfs_url = token_url(server, user, f"/{tenant}/{pushed.repo}.git/info/lfs")
    run(["git", "config", "--file", ".lfsconfig", "lfs.url", lfs_url], env, cwd=work)
    run(["git", "add", ".lfsconfig"], env, cwd=work)
    run(["git", "commit", "-q", "-m", "assets, and where their objects are"], env, cwd=work)
    served = tmp_path / "served"
    run(["git", "clone", "-q", "--bare", str(work), str(served / "plain.git")], env)
    run(["git", "update-server-info"], env, cwd=served / "plain.git")
    origin = HostileOrigin(served, "http://0.0.0.0:5432/metadata")
    try:
        target = server.new_repo(tenant, grants={user.name: "write"})
        resp = repour(server, "/clone", {"type": "git", "originRepoUrl": f"http://127.0.0.1:{origin.port}/plain.git",
                                         "targetRepoUrl": server.repo_url(tenant, target)}, user)
        assert resp.status_code == 200, resp.text
        assert origin.requests == []  # the derived endpoint was never asked
        assert held_oids(server, tenant, target) == {oid(data)}
        assert user.token not in resp.text
    finally:
        origin.close()


SSHD = Path("/usr/sbin/sshd")
ANONYMOUS_SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {root}/host_key
PidFile none
UsePAM no
StrictModes no
PubkeyAuthentication no
KbdInteractiveAuthentication no
# The account has an empty password: ssh's "none" method logs in, as on an anonymous mirror.
PasswordAuthentication yes
PermitEmptyPasswords yes
AllowUsers {user}
ForceCommand {root}/dispatch
LogLevel ERROR
"""
# What the anonymous account runs: git's commands as asked, and a git-lfs-authenticate that
# answers where the objects are (gitserver's batch API of the repository holding them).
DISPATCH = """#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
  git-lfs-authenticate\\ *) printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> {root}/asked; cat {root}/answer ;;
  git-upload-pack\\ *) exec sh -c "$SSH_ORIGINAL_COMMAND" ;;
  *) echo "refused: $SSH_ORIGINAL_COMMAND" >&2; exit 1 ;;
esac
"""


class AnonymousSshOrigin:
    """OpenSSH's sshd on a loopback port, logging in an account with an empty password (its own,
    made for this test and removed after it) that serves git's fetch and git-lfs-authenticate."""

    def __init__(self, root: Path, answer: dict[str, Any]) -> None:
        self.root, self.port = root, free_port()
        self.user = f"lfsanon{os.getpid()}"
        root.chmod(0o755)
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(root), "--shell", "/bin/sh",
                        "--password", "", self.user], check=True, capture_output=True)
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key")], check=True)
            (root / "answer").write_text(json.dumps(answer))
            dispatch = root / "dispatch"
            dispatch.write_text(DISPATCH.format(root=root))
            dispatch.chmod(0o755)
            (root / "sshd_config").write_text(ANONYMOUS_SSHD_CONFIG.format(port=self.port, root=root, user=self.user))
            os.makedirs("/run/sshd", exist_ok=True)
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                                         stderr=open(root / "sshd.log", "wb"), start_new_session=True)  # noqa: SIM115
            wait_for_port(self.port)
        except BaseException:
            self.remove_account()
            raise

    def serve(self, bare: Path) -> str:
        (self.root / "asked").touch()
        subprocess.run(["chown", "-R", self.user, str(bare), str(self.root / "asked")], check=True)
        return f"ssh://{self.user}@127.0.0.1:{self.port}{bare}"

    @property
    def asked(self) -> list[str]:
        path = self.root / "asked"
        return path.read_text().splitlines() if path.exists() else []

    def remove_account(self) -> None:
        subprocess.run(["userdel", self.user], check=False, capture_output=True)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.remove_account()


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {port}")


def test_an_ssh_origin_answers_git_lfs_authenticate(server: GitServer, tmp_path: Path,
                                                    git_env: dict[str, str]) -> None:
    """The origin is reached over SSH (anonymously: Repour never authenticates to an origin's SSH
    server); its git-lfs-authenticate names the endpoint and header, which the sync then uses."""
    if os.getuid() != 0 or not SSHD.exists() or shutil.which("useradd") is None:
        pytest.skip("needs root, OpenSSH's sshd and useradd (an account with an empty password)")
    env = lfs_home(tmp_path, git_env)
    data = b"over ssh " * 30_000
    pushed = pushed_lfs_repo(server, tmp_path, env, {"model.bin": data})
    tenant, user = pushed.tenant, pushed.user
    basic = base64.b64encode(f"x:{user.token}".encode()).decode()
    answer = {"href": f"{server.http_url}/{tenant}/{pushed.repo}.git/info/lfs",
              "header": {"Authorization": f"Basic {basic}"}, "expires_in": 600}
    root = Path(tempfile.mkdtemp(prefix="lfs-ssh-origin-"))  # outside pytest's 0700 tree: the account reads it
    origin = AnonymousSshOrigin(root, answer)
    try:
        bare = root / "repos" / "origin.git"
        run(["git", "clone", "-q", "--bare", str(pushed.work), str(bare)], env)
        url = origin.serve(bare)
        target = server.new_repo(tenant, grants={user.name: "write"})
        resp = repour(server, "/clone", {"type": "git", "originRepoUrl": url,
                                         "targetRepoUrl": server.repo_url(tenant, target)}, user)
        assert resp.status_code == 200, resp.text
        assert origin.asked == [f"git-lfs-authenticate {bare} download"]
        assert held_oids(server, tenant, target) == {oid(data)}
    finally:
        origin.close()
        shutil.rmtree(root, ignore_errors=True)
