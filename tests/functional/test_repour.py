"""The Repour-compatible endpoints against the real ``gitserver serve`` (SQLite and PostgreSQL):
what a Repour client sends and sees, the repositories it leaves behind, and the callbacks.

The alignment tool is a stand-in Python script (no Java), configured as the MVN (PME) command;
what it does is driven by files in the tree it aligns:

* ``VERSION``: the project version; the tool reports ``<VERSION>.redhat-00001`` in the result
  file of PME before 2019, ``target/pom-manip-ext-result.json``, or, when ``REPORT`` names a key
  (``gav``, ``rootGAV``), in current PME's ``target/alignmentReport.json`` under that key;
* ``-DrepoRemovalBackup=<file>``: it writes a repository backup naming one removed repository;
* it always writes ``aligned.txt`` (so the tree changes, deterministically);
* ``SLEEP``: seconds to sleep first (tests find its processes by a marker they pass in its
  parameters: in its sandbox it can write nowhere the test could read, and its pid there is
  not the host's);
* ``FAIL``: exit 3 with a message on stderr.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gitserver.repour import reqour
from tests.conftest import SERVER_REFS, wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server, unique
from tests.oidc_issuer import IssuerServer

FAKE_PME = r'''
import json, os, pathlib, sys, time
root = pathlib.Path.cwd()
if (root / "SLEEP").exists():
    time.sleep(float((root / "SLEEP").read_text()))
if (root / "FAIL").exists():
    print("stand-in PME: the build is broken", file=sys.stderr)
    sys.exit(3)
(root / "aligned.txt").write_text("aligned with " + " ".join(sys.argv[1:]) + "\n")
print("stand-in PME: aligned with", *sys.argv[1:])
if (root / "VERSION").exists():
    version = (root / "VERSION").read_text().strip() + ".redhat-00001"
    gav = {"groupId": "org.example", "artifactId": "demo", "version": version}
    (root / "target").mkdir(exist_ok=True)
    if (root / "REPORT").exists():
        # Current PME: target/alignmentReport.json, the root GAV under the key REPORT names.
        (root / "target" / "alignmentReport.json").write_text(json.dumps({
            (root / "REPORT").read_text().strip(): gav, "modules": []}))
    else:
        (root / "target" / "pom-manip-ext-result.json").write_text(json.dumps({"VersioningState": {
            "executionRootModified": gav}}))
for arg in sys.argv[1:]:
    if arg.startswith("-DrepoRemovalBackup="):
        (root / arg.split("=", 1)[1]).write_text(
            "<settings><profiles><profile><repositories><repository><id>central</id><name>Central</name>"
            "<url>https://repo.example.org/</url><snapshots><enabled>false</enabled></snapshots>"
            "</repository></repositories></profile></profiles></settings>")
'''


def tool_env(tmp: Path) -> dict[str, str]:
    """The stand-in tool, run the way an operator installs one: the system's python3 (the
    sandbox shows jobs the system, not the test's virtualenv) and a script in a directory of
    its own, listed in sandbox_read_only_paths (never next to the data dir)."""
    tool_dir = tmp / "tool"
    tool_dir.mkdir(exist_ok=True)
    script = tool_dir / "fake_pme.py"
    script.write_text(FAKE_PME)
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    return {"GITSERVER_ADJUST_MVN_COMMAND": f"{python} {script}",
            "GITSERVER_ADJUST_MVN_PARAMETERS": "-DrestURL=http://da.example.org",
            "GITSERVER_SANDBOX_READ_ONLY_PATHS": str(tool_dir)}


def tool_pids(marker: str) -> list[int]:
    """Host pids of the live processes whose command line holds ``marker`` (the stand-in tool
    and the sandbox around it)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or marker.encode() not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            if Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def sleeping_tool(spec: dict[str, Any]) -> str:
    """Mark the stand-in tool of ``spec`` so :func:`tool_pids` finds it; the marker."""
    marker = unique("-Dmarker=m")
    spec["adjustParameters"] = {"ALIGNMENT_PARAMETERS": marker}
    return marker


class TokenEndpoint:
    """A loopback OIDC token endpoint (client-credentials grant) that counts what it hands out."""

    def __init__(self) -> None:
        self.grants: list[dict[str, list[str]]] = []
        grants = self.grants

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                grants.append(urllib.parse.parse_qs(self.rfile.read(length).decode()))
                body = json.dumps({"access_token": f"svc-token-{len(grants)}", "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


class BifrostStub:
    """A loopback stand-in for Bifrost's /final-log/upload: records each upload's headers and raw
    multipart body."""

    def __init__(self) -> None:
        self.uploads: queue.Queue[dict[str, Any]] = queue.Queue()
        uploads = self.uploads

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                uploads.put({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": self.rfile.read(length)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bifrost() -> Iterator[BifrostStub]:
    stub = BifrostStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[IssuerServer]:
    """PNC's Keycloak, as far as token verification sees it (discovery document and JWKS on
    loopback; the tokens are signed with keys made by the test)."""
    server = IssuerServer()
    yield server
    server.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            git_env: dict[str, str], token_endpoint: TokenEndpoint, issuer: IssuerServer,
            bifrost: BifrostStub) -> Iterator[GitServer]:
    """A server with the stand-in alignment tool, a service account and an OIDC issuer
    configured, on each backend."""
    root = tmp_path_factory.mktemp(f"repour-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    oidc = {"GITSERVER_OIDC_TOKEN_URL": token_endpoint.url, "GITSERVER_OIDC_CLIENT_ID": "gitserver-callbacks",
            "GITSERVER_OIDC_SERVICE_ACCOUNT_SECRET": "svc-secret",
            # The receiver's host: the token goes to listed callback hosts only.
            "GITSERVER_OIDC_CALLBACK_HOSTS": "127.0.0.1",
            # Incoming PNC tokens (the default role map: Reqour's role pnc-app-repour-user).
            "GITSERVER_OIDC_ISSUER": issuer.issuer.url, "GITSERVER_OIDC_AUDIENCE": "gitserver",
            # Projects and upstream URLs without an organisation.
            "GITSERVER_REPOUR_DEFAULT_TENANT": "pnc-default",
            "GITSERVER_REPOUR_BIFROST_URL": bifrost.url}
    srv = GitServer(root / "data", db_url, git_env, {**tool_env(root), **oidc})
    try:
        srv.start()
    except Exception:
        srv.stop()
        raise
    yield srv
    srv.stop()


class Receiver:
    """A loopback HTTP server recording callback requests (method, path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received.put({"method": self.command, "path": self.path, "headers": dict(self.headers),
                              "body": json.loads(body or b"null")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record  # noqa: N815  (http.server's naming)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no callback within {timeout}s") from None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --- helpers -------------------------------------------------------------------------------------

def setup_repo(srv: GitServer, role: str = "admin") -> tuple[str, str, User]:
    tenant = srv.new_tenant()
    user = srv.new_user(tenant, role=role)
    repo = srv.new_repo(tenant, grants={user.name: "write"} if role == "member" else None)
    return tenant, repo, user


def urls(srv: GitServer, tenant: str, repo: str) -> dict[str, str]:
    return {"readwrite": f"{srv.ssh_base}/{tenant}/{repo}.git",
            "readonly": f"{srv.http_url}/git/{tenant}/{repo}.git"}


def origin_repo(tmp_path: Path, git_env: dict[str, str], files: dict[str, str] | None = None) -> Path:
    path = make_repo(tmp_path / unique("origin"), git_env, files or {"README.md": "hello\n"})
    subprocess.run(["git", "tag", "v1"], cwd=path, env=git_env, check=True)
    return path


def run_git(git_env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=git_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def http_clone_tag(srv: GitServer, git_env: dict[str, str], user: User, readonly_url: str, tag: str,
                   dest: Path) -> Path:
    """What a builder does: a shallow clone of the tag over the read-only smart HTTP URL."""
    run_git(git_env, "-c", f"http.extraHeader=Authorization: Bearer {user.token}", "clone", "-q",
            "--depth", "1", "--branch", tag, readonly_url, str(dest))
    return dest


def tree_of(git_env: dict[str, str], path: Path, rev: str = "HEAD") -> str:
    return run_git(git_env, "rev-parse", f"{rev}^{{tree}}", cwd=path).strip()


def remote_refs(srv: GitServer, tenant: str, repo: str) -> dict[str, str]:
    out = subprocess.run(["git", "--git-dir", str(srv.repo_path(tenant, repo)), "for-each-ref",
                          "--format=%(refname) %(objectname)"], capture_output=True, text=True, check=True)
    return {ref: oid for ref, oid in (line.split(" ", 1) for line in out.stdout.split("\n") if line)
            if not ref.startswith(SERVER_REFS)}


def post(srv: GitServer, path: str, body: Any, token: str | None = None, **kwargs: Any) -> requests.Response:
    return srv.api("POST", path, json=body, token=token, **kwargs)


# --- /, /version, /git-external-to-internal -----------------------------------------------------------

def test_info_and_version_need_no_token(rserver: GitServer) -> None:
    version = requests.get(rserver.http_url + "/version", timeout=10)
    assert version.status_code == 200
    body = version.json()
    assert (body["name"] == "gitserver" and body["version"] and len(body["commit"]) in (7, 40, 64)) or \
        body["commit"] == "Unknown"
    info = requests.get(rserver.http_url + "/", timeout=10)
    assert info.status_code == 200 and info.headers["Content-Type"].startswith("text/html")
    assert body["version"] in info.text


@pytest.mark.parametrize("path", ["/git-external-to-internal", "/external-to-internal"])
def test_external_to_internal(rserver: GitServer, path: str) -> None:
    ok = requests.post(rserver.http_url + path, json={"external_url": "git@github.com:project-ncl/repour.git"},
                       timeout=10)
    assert ok.status_code == 200
    assert ok.json() == {"external_url": "git@github.com:project-ncl/repour.git",
                         "internal_url": f"{rserver.ssh_base}/project-ncl/repour.git"}
    not_json = requests.post(rserver.http_url + path, data=b"{nope", timeout=10)
    assert not_json.status_code == 400
    assert not_json.json() == [{"error_message": "expected json", "error_type": "json parsability", "path": []}]
    unparseable = requests.post(rserver.http_url + path, json={"external_url": "ftp:/x"}, timeout=10)
    assert unparseable.status_code == 400 and unparseable.json()[0]["path"] == ["external_url"]
    missing = requests.post(rserver.http_url + path, json={"url": "https://github.com/a/b"}, timeout=10)
    assert missing.status_code == 400
    assert {tuple(e["path"]) for e in missing.json()} == {("external_url",), ("url",)}


# --- /internal-scm ----------------------------------------------------------------------------------

def test_internal_scm_creates_repo_with_owner_groups(rserver: GitServer, receiver: Receiver) -> None:
    tenant = rserver.new_tenant()
    tadmin = rserver.new_user(tenant, role="admin")
    member = rserver.new_user(tenant, role="member")
    spec = {"project": f"{tenant}/lib", "owner_groups": ["lib-owners", "lib-owners"], "description": "a library",
            "parent_project": "All-Projects"}
    created = post(rserver, "/internal-scm", spec, token=tadmin.token)
    assert created.status_code == 200, created.text
    assert created.json() == {"status": "SUCCESS_CREATED",
                              "readwrite_url": f"{rserver.ssh_base}/{tenant}/lib.git",
                              "readonly_url": f"{rserver.http_url}/git/{tenant}/lib.git"}
    again = post(rserver, "/internal-scm", spec, token=tadmin.token)
    assert again.status_code == 200 and again.json()["status"] == "SUCCESS_ALREADY_EXISTS"
    # The owner group was created in the tenant and holds admin on the repository.
    grants = rserver.api("GET", f"/api/v1/tenants/{tenant}/repos/lib/grants", token=tadmin.token)
    if grants.status_code == 200:
        assert any(g.get("group") == "lib-owners" and g.get("permission") == "admin"
                   for g in grants.json()["items"]), grants.json()
    with rserver.db() as session:
        from gitserver.admin import groups, repos, tenants
        from gitserver.db import models
        t = tenants.get_tenant(session, tenant)
        group = groups.get_group(session, t, "lib-owners")
        repo = repos.get_repo(session, t, "lib")
        grant = session.query(models.Grant).filter_by(repo_id=repo.id, group_id=group.id).one()
        assert grant.permission == "admin" and repo.description == "a library"
    # Only tenant admins; other tenants look missing; a token is required.
    refused = post(rserver, "/internal-scm", {"project": f"{tenant}/other", "owner_groups": []}, token=member.token)
    assert refused.status_code == 403 and refused.json()["exit_code"] == 10
    other = rserver.new_user(rserver.new_tenant(), role="admin")
    hidden = post(rserver, "/internal-scm", {"project": f"{tenant}/other", "owner_groups": []}, token=other.token)
    assert hidden.status_code == 404
    assert post(rserver, "/internal-scm", spec, token="").status_code == 401
    # Invalid bodies.
    bad = post(rserver, "/internal-scm", {"project": "no-slash", "owner_groups": ["a b"]}, token=tadmin.token)
    assert bad.status_code == 400 and isinstance(bad.json(), list)
    layout = post(rserver, "/internal-scm", {"project": "a/b/c", "owner_groups": []}, token=tadmin.token)
    assert layout.status_code == 400 and layout.json()[0]["path"] == ["project"]
    # Callback mode.
    queued = post(rserver, "/internal-scm", {"project": f"{tenant}/cb", "owner_groups": ["lib-owners"],
                                             "callback": {"url": receiver.url + "/scm", "method": "PUT"}},
                  token=tadmin.token)
    assert queued.status_code == 202
    callback_id = queued.json()["callback"]["id"]
    assert len(callback_id) == 48
    got = receiver.next()
    assert got["method"] == "PUT" and got["path"] == "/scm"
    assert got["body"]["status"] == "SUCCESS_CREATED"
    assert got["body"]["callback"] == {"status": 200, "id": callback_id}


# --- /clone -------------------------------------------------------------------------------------------

def test_clone_branch_tag_commit_then_shallow_clone_over_http(
        rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user = setup_repo(rserver)
    origin = origin_repo(tmp_path, git_env, {"README.md": "v1\n", "src/app.py": "print(1)\n"})
    target = urls(rserver, tenant, repo)["readwrite"]
    spec = {"type": "git", "originRepoUrl": f"file://{origin}", "targetRepoUrl": target, "ref": "v1"}
    resp = post(rserver, "/clone", spec, token=user.token)
    assert resp.status_code == 200, resp.text
    assert resp.json() == spec  # Repour answers with the request
    clone = http_clone_tag(rserver, git_env, user, urls(rserver, tenant, repo)["readonly"], "v1", tmp_path / "c")
    assert (clone / "src" / "app.py").read_text() == "print(1)\n"
    assert tree_of(git_env, clone) == tree_of(git_env, origin, "v1")
    # Into the empty repository everything came (Repour: later /adjust calls on other refs
    # find them); after that, only the ref named: a branch as a branch, a commit id as Repour's
    # tag repour-sync-<ref> (made by the server: the name is in its reserved namespace).
    assert remote_refs(rserver, tenant, repo)["refs/heads/main"] == run_git(git_env, "rev-parse", "main",
                                                                            cwd=origin).strip()
    second = commit_files(origin, git_env, {"README.md": "v2\n"})
    run_git(git_env, "branch", "later", cwd=origin)
    assert post(rserver, "/clone", {**spec, "ref": "main", "originRepoUrl": str(origin)},
                token=user.token).status_code == 200
    first = run_git(git_env, "rev-parse", "v1", cwd=origin).strip()
    assert post(rserver, "/clone", {**spec, "ref": first[:12]}, token=user.token).status_code == 200
    refs_now = remote_refs(rserver, tenant, repo)
    assert refs_now["refs/heads/main"] == second and refs_now[f"refs/tags/repour-sync-{first[:12]}"] == first
    assert "refs/heads/later" not in refs_now and f"refs/heads/branch-{first[:12]}" not in refs_now
    # The pushes went through the hooks: recorded with protocol "repour" and archived.
    with rserver.db() as session:
        from sqlalchemy import select

        from gitserver.db import models
        repo_id = session.scalar(select(models.Repository.id).join(models.Tenant).where(
            models.Tenant.name == tenant, models.Repository.name == repo))
        pushes = session.scalars(select(models.Push).where(models.Push.repo_id == repo_id)).all()
        assert [p.protocol for p in pushes] == ["repour"] * 2
        assert all(p.user_id == user.id for p in pushes)


def test_clone_everything_into_an_empty_repo(rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user = setup_repo(rserver)
    origin = origin_repo(tmp_path, git_env)
    run_git(git_env, "branch", "feature", cwd=origin)
    run_git(git_env, "tag", "-a", "-m", "release", "v2", cwd=origin)
    # An origin that is itself an archive carries reserved names: they are skipped, not refused.
    run_git(git_env, "tag", "repour-0123", cwd=origin)
    spec = {"type": "git", "originRepoUrl": str(origin), "targetRepoUrl": urls(rserver, tenant, repo)["readonly"]}
    resp = post(rserver, "/clone", spec, token=user.token)
    assert resp.status_code == 200, resp.text
    names = set(remote_refs(rserver, tenant, repo))
    assert {"refs/heads/main", "refs/heads/feature", "refs/tags/v1", "refs/tags/v2"} <= names
    assert "refs/tags/repour-0123" not in names


def test_clone_errors(rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user = setup_repo(rserver)
    origin = origin_repo(tmp_path, git_env)
    target = urls(rserver, tenant, repo)["readwrite"]
    spec = {"type": "git", "originRepoUrl": str(origin), "targetRepoUrl": target, "ref": "no-such-ref"}
    missing = post(rserver, "/clone", spec, token=user.token)
    assert missing.status_code == 400
    body = missing.json()
    # Repour's described error: its fields, error_type and error_traceback (here a reference
    # to the server's log line, never a stack trace).
    assert set(body) == {"desc", "cmd", "exit_code", "stderr", "error_type", "error_traceback"}
    assert body["exit_code"] == 10 and "no-such-ref" in body["desc"]
    assert len(body["error_traceback"]) == 32 and "Traceback" not in missing.text
    unreachable = post(rserver, "/clone", {**spec, "originRepoUrl": str(tmp_path / "nowhere"), "ref": "main"},
                       token=user.token)
    assert unreachable.status_code == 400 and unreachable.json()["exit_code"] == 10
    inside = post(rserver, "/clone", {**spec, "originRepoUrl": str(rserver.repo_path(tenant, repo))},
                  token=user.token)
    assert inside.status_code == 400 and "data directory" in inside.json()["desc"]
    invalid = post(rserver, "/clone", {"type": "svn", "originRepoUrl": "x y", "bogus": 1}, token=user.token)
    assert invalid.status_code == 400
    assert {tuple(e["path"]) for e in invalid.json()} == {("type",), ("originRepoUrl",), ("targetRepoUrl",),
                                                          ("bogus",)}
    not_json = rserver.api("POST", "/clone", data=b"not json", token=user.token)
    assert not_json.status_code == 400 and not_json.json()[0]["error_type"] == "json parsability"
    assert post(rserver, "/clone", spec, token="").status_code == 401
    reader = rserver.new_user(tenant, role="member")
    with rserver.db() as session:
        from gitserver.admin import grants, repos, tenants, users
        t = tenants.get_tenant(session, tenant)
        grants.set_grant(session, repos.get_repo(session, t, repo), "read",
                         user=users.get_user(session, t, reader.name))
    assert post(rserver, "/clone", {**spec, "ref": "main"}, token=reader.token).status_code == 403
    # Protection rules apply: a moved tag is refused, naming the ref and the rule.
    assert post(rserver, "/clone", {**spec, "ref": "v1"}, token=user.token).status_code == 200
    commit_files(origin, git_env, {"README.md": "moved\n"})
    run_git(git_env, "tag", "-f", "v1", cwd=origin)
    moved = post(rserver, "/clone", {**spec, "ref": "v1"}, token=user.token)
    assert moved.status_code == 400 and moved.json()["exit_code"] == 10
    assert "refs/tags/v1" in moved.json()["desc"] and "existing tags cannot be moved" in moved.json()["desc"]


def test_clone_and_sync_refuse_every_spelling_of_another_tenants_private_repository(
        rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    # Issue 21 finding 2: git decodes a file:// URL and tries <path>.git; the check must too.
    other, secret, _owner, _work = pushed_repo(rserver, git_env, tmp_path, {"SECRET": "TOPSECRET\n"})
    private = rserver.repo_path(other, secret)
    secret_commit = run_git(git_env, "--git-dir", str(private), "rev-parse", "main").strip()
    data, root = rserver.data_dir.resolve(), rserver.data_dir.resolve().parent
    inner = private.resolve().relative_to(data)  # repos/<tenant>/<repo>.git
    (tmp_path / "a" / "b").mkdir(parents=True)
    up = os.path.relpath(root, tmp_path / "a" / "b").replace("..", "%2e%2e")
    (tmp_path / "link.git").symlink_to(private)
    spellings = [f"file://{root}/%64ata/{inner}", f"file://{root}/data%2F{str(inner).replace('/', '%2F')}",
                 f"file://{tmp_path}/a/b/{up}/data/{inner}", f"file://localhost{private}",
                 f"file:////{private}", f"{data}/./{inner.parent}/../{inner}", str(tmp_path / "link"),
                 f"file://{private}".removesuffix(".git")]
    tenant, repo, user = setup_repo(rserver)
    target = urls(rserver, tenant, repo)["readwrite"]
    for origin in spellings:
        resp = post(rserver, "/clone", {"type": "git", "originRepoUrl": origin, "targetRepoUrl": target},
                    token=user.token)
        assert resp.status_code == 400, (origin, resp.text)
        body = resp.json()
        assert body["exit_code"] == 10 and body["error_type"] == "OriginRefused", origin
        assert body["desc"].startswith("origin URL refused: ") and "Traceback" not in resp.text, origin
    assert remote_refs(rserver, tenant, repo) == {}
    copied = subprocess.run(["git", "--git-dir", str(rserver.repo_path(tenant, repo)), "cat-file", "-e",
                             secret_commit], capture_output=True)
    assert copied.returncode != 0, "nothing of the private repository reached the caller's"
    # /adjust with sync goes through the same check.
    atenant, arepo, auser, _ = pushed_repo(rserver, git_env, tmp_path, {"README.md": "mine\n"})
    synced = post(rserver, "/adjust", {"ref": "main", "internal_url": urls(rserver, atenant, arepo),
                                       "originRepoUrl": spellings[0], "sync": True}, token=auser.token)
    assert synced.status_code == 400 and synced.json()["error_type"] == "OriginRefused", synced.text
    assert secret_commit not in remote_refs(rserver, atenant, arepo).values()


def test_clone_callback_mode(rserver: GitServer, git_env: dict[str, str], tmp_path: Path,
                             receiver: Receiver, token_endpoint: TokenEndpoint) -> None:
    tenant, repo, user = setup_repo(rserver)
    origin = origin_repo(tmp_path, git_env)
    spec = {"type": "git", "originRepoUrl": str(origin), "targetRepoUrl": urls(rserver, tenant, repo)["readwrite"],
            "ref": "main", "taskId": unique("task"), "callback": {"url": receiver.url + "/done"}}
    queued = post(rserver, "/clone", spec, token=user.token)
    assert queued.status_code == 202, queued.text
    callback_id = queued.json()["callback"]["id"]
    assert len(callback_id) == 48
    got = receiver.next()
    assert got["method"] == "POST" and got["path"] == "/done"
    assert got["body"] == {**spec, "callback": {"status": 200, "id": callback_id}}
    # The callback carries the service account's token (client-credentials grant).
    assert got["headers"]["Authorization"].startswith("Bearer svc-token-")
    assert "refs/heads/main" in remote_refs(rserver, tenant, repo)
    # positive/negative callbacks: a failure goes to the negative one, with Repour's error body.
    failing = {**spec, "ref": "nope", "positiveCallback": {"url": receiver.url + "/ok"},
               "negativeCallback": {"uri": receiver.url + "/ko", "method": "PUT"}}
    del failing["callback"]
    queued = post(rserver, "/clone", failing, token=user.token)
    assert queued.status_code == 202
    got = receiver.next()
    assert (got["method"], got["path"]) == ("PUT", "/ko")
    assert got["body"]["callback"] == {"status": 400, "id": queued.json()["callback"]["id"]}
    assert got["body"]["exit_code"] == 10
    assert token_endpoint.grants and token_endpoint.grants[0] == {
        "grant_type": ["client_credentials"], "client_id": ["gitserver-callbacks"],
        "client_secret": ["svc-secret"]}
    # Cached: far fewer token requests than callbacks sent (one per process at most).
    assert len(token_endpoint.grants) <= 4
    # The work ran as a pipeline with the task id, visible in the pipelines API.
    with rserver.db() as session:
        from sqlalchemy import select

        from gitserver.db import models
        rows = session.scalars(select(models.Pipeline).where(models.Pipeline.task_id == spec["taskId"])
                               .order_by(models.Pipeline.id)).all()
        assert [(p.kind, p.status) for p in rows] == [("clone", "succeeded"), ("clone", "failed")]
        pipeline_id, failed_id = rows[0].id, rows[1].id
    shown = rserver.api("GET", f"/api/v1/pipelines/{pipeline_id}", token=user.token)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["kind"], shown.json()["status"], shown.json()["repo"]) == ("clone", "succeeded", repo)
    assert shown.json()["task_id"] == spec["taskId"]
    # The repository's pipeline list filters by taskId: both requests, newest first; the push
    # pipelines the clones queued (their own kind, no taskId) are left out.
    listing = f"/api/v1/tenants/{tenant}/repos/{repo}/pipelines"
    by_task = rserver.api("GET", listing, params={"task_id": spec["taskId"]}, token=user.token)
    assert by_task.status_code == 200, by_task.text
    assert [(p["id"], p["kind"], p["task_id"]) for p in by_task.json()["items"]] == [
        (failed_id, "clone", spec["taskId"]), (pipeline_id, "clone", spec["taskId"])]
    everything = rserver.api("GET", listing, token=user.token).json()["items"]
    assert {p["kind"] for p in everything} >= {"clone", "push"}
    assert all(p["task_id"] is None for p in everything if p["kind"] == "push")
    assert rserver.api("GET", listing, params={"task_id": "no-such-task"}, token=user.token).json()["items"] == []
    too_long = rserver.api("GET", listing, params={"task_id": "x" * 201}, token=user.token)
    assert too_long.status_code == 400 and "task_id" in too_long.text


# --- /adjust ------------------------------------------------------------------------------------------

def pushed_repo(srv: GitServer, git_env: dict[str, str], tmp_path: Path,
                files: dict[str, str]) -> tuple[str, str, User, Path]:
    """A repository with ``files`` pushed to main over SSH."""
    tenant, repo, user = setup_repo(srv)
    work = make_repo(tmp_path / unique("work"), git_env, files)
    srv.git(user, "push", "-q", srv.repo_url(tenant, repo), "main", cwd=work)
    return tenant, repo, user, work


def test_adjust_twice_on_the_same_tree_gives_the_same_tag(
        rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user, work = pushed_repo(rserver, git_env, tmp_path, {"VERSION": "1.4.0\n", "pom.xml": "<p/>\n"})
    spec = {"ref": "main", "internal_url": urls(rserver, tenant, repo), "buildType": "MVN",
            "adjustParameters": {"ALIGNMENT_PARAMETERS": "-DdependencyOverride=x"}}
    first = post(rserver, "/adjust", spec, token=user.token)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"tag", "commit", "url", "upstream_commit", "is_ref_revision_internal", "adjustResultData"}
    assert body["tag"] == "1.4.0.redhat-00001"
    assert body["url"] == urls(rserver, tenant, repo)
    assert body["upstream_commit"] == run_git(git_env, "rev-parse", "HEAD", cwd=work).strip()
    assert body["is_ref_revision_internal"] is True
    assert body["adjustResultData"]["VersioningState"]["executionRootModified"]["version"] == "1.4.0.redhat-00001"
    second = post(rserver, "/adjust", spec, token=user.token)
    assert second.status_code == 200
    assert (second.json()["tag"], second.json()["commit"]) == (body["tag"], body["commit"])
    # The adjust tag is signed by the server like the push archives (docs/provenance.md).
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(requests.get(rserver.http_url + "/api/v1/signing-keys/allowed_signers", timeout=10).text)
    verified = subprocess.run(["git", "--git-dir", str(rserver.repo_path(tenant, repo)), "-c", "gpg.format=ssh",
                               "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-tag", body["tag"]],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    # The tag names the aligned tree: the configured and the user's parameters reached the tool.
    clone = http_clone_tag(rserver, git_env, user, body["url"]["readonly"], body["tag"], tmp_path / "c")
    assert (clone / "aligned.txt").read_text() == \
        "aligned with -DrestURL=http://da.example.org -DdependencyOverride=x\n"
    assert run_git(git_env, "rev-parse", "HEAD", cwd=clone).strip() == body["commit"]
    assert not (clone / "target").exists()
    # Another version of the tool's answer on a different tree with a taken tag name gets a suffix.
    commit_files(work, git_env, {"pom.xml": "<p>changed</p>\n"})
    rserver.git(user, "push", "-q", rserver.repo_url(tenant, repo), "main", cwd=work)
    third = post(rserver, "/adjust", spec, token=user.token)
    assert third.status_code == 200
    assert third.json()["tag"] == f"1.4.0.redhat-00001-{third.json()['commit'][:8]}"


def test_adjust_without_tool_result_and_noop_dedup(rserver: GitServer, git_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    tenant, repo, user, work = pushed_repo(rserver, git_env, tmp_path, {"README.md": "no version here\n"})
    spec = {"ref": "main", "internal_url": urls(rserver, tenant, repo)}
    first = post(rserver, "/adjust", spec, token=user.token)
    assert first.status_code == 200, first.text
    assert first.json()["tag"] == f"repour-{first.json()['commit']}"
    assert post(rserver, "/adjust", spec, token=user.token).json()["tag"] == first.json()["tag"]
    # GRADLE has no tool configured here: noop. The unchanged tree was archived by the push
    # pipeline (or by this adjust, whichever came first): one tag per tree either way.
    noop = post(rserver, "/adjust", {**spec, "buildType": "GRADLE"}, token=user.token)
    assert noop.status_code == 200 and noop.json()["adjustResultData"] == {}
    head = run_git(git_env, "rev-parse", "HEAD", cwd=work).strip()
    clone = http_clone_tag(rserver, git_env, user, spec["internal_url"]["readonly"], noop.json()["tag"],
                           tmp_path / "noop")
    assert tree_of(git_env, clone) == tree_of(git_env, work) and noop.json()["upstream_commit"] == head
    assert post(rserver, "/adjust", {**spec, "buildType": "GRADLE"}, token=user.token).json()["tag"] == \
        noop.json()["tag"]


def test_adjust_sync_pull_request_and_upstream_force_push(
        rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user = setup_repo(rserver)
    origin = origin_repo(tmp_path, git_env, {"VERSION": "2.0.0\n"})
    spec = {"ref": "main", "internal_url": urls(rserver, tenant, repo), "originRepoUrl": f"file://{origin}",
            "sync": True}
    synced = post(rserver, "/adjust", spec, token=user.token)
    assert synced.status_code == 200, synced.text
    tag = synced.json()["tag"]
    assert tag == "2.0.0.redhat-00001" and synced.json()["is_ref_revision_internal"] is False
    assert remote_refs(rserver, tenant, repo)["refs/heads/main"] == synced.json()["upstream_commit"]
    archived_tree = tree_of(git_env, http_clone_tag(rserver, git_env, user, spec["internal_url"]["readonly"], tag,
                                                    tmp_path / "before"))
    # A pull request ref: fetched to a temporary branch, tagged Pull_Request-…, never pushed.
    run_git(git_env, "checkout", "-q", "-b", "pr", cwd=origin)
    pr_commit = commit_files(origin, git_env, {"feature.txt": "pr\n"})
    run_git(git_env, "update-ref", "refs/pull/7/head", pr_commit, cwd=origin)
    run_git(git_env, "checkout", "-q", "main", cwd=origin)
    pr = post(rserver, "/adjust", {**spec, "ref": "pull/7"}, token=user.token)
    assert pr.status_code == 200, pr.text
    assert pr.json()["tag"] == "Pull_Request-2.0.0.redhat-00001" and pr.json()["upstream_commit"] == pr_commit
    names = remote_refs(rserver, tenant, repo)
    assert not any("pull" in name or name == "refs/heads/pr" for name in names)
    # Upstream rewrites main: the sync is refused (protected history) and the archived tag
    # still gives exactly the tree it gave before.
    run_git(git_env, "commit", "-q", "--amend", "-m", "rewritten", cwd=origin)
    rewritten = post(rserver, "/adjust", spec, token=user.token)
    assert rewritten.status_code == 400 and rewritten.json()["exit_code"] == 10
    assert "non-fast-forward" in rewritten.json()["desc"]
    after = http_clone_tag(rserver, git_env, user, spec["internal_url"]["readonly"], tag, tmp_path / "after")
    assert tree_of(git_env, after) == archived_tree


def test_adjust_errors_and_callback(rserver: GitServer, git_env: dict[str, str], tmp_path: Path,
                                    receiver: Receiver) -> None:
    tenant, repo, user, work = pushed_repo(rserver, git_env, tmp_path, {"VERSION": "3.0\n"})
    spec = {"ref": "does-not-exist", "internal_url": urls(rserver, tenant, repo)}
    missing = post(rserver, "/adjust", spec, token=user.token)
    assert missing.status_code == 400 and missing.json()["exit_code"] == 10
    assert "does-not-exist" in missing.json()["desc"]
    invalid = post(rserver, "/adjust", {"ref": 1, "internal_url": {}, "buildType": "ANT"}, token=user.token)
    assert invalid.status_code == 400
    assert {tuple(e["path"]) for e in invalid.json()} == {("ref",), ("internal_url", "readwrite"),
                                                          ("internal_url", "readonly"), ("buildType",)}
    bad_param = post(rserver, "/adjust", {**spec, "ref": "main",
                                          "adjustParameters": {"ALIGNMENT_PARAMETERS": "-Dx='unbalanced"}},
                     token=user.token)
    assert bad_param.status_code == 400 and bad_param.json()["exit_code"] == 10
    commit_files(work, git_env, {"FAIL": "1"})
    rserver.git(user, "push", "-q", rserver.repo_url(tenant, repo), "main", cwd=work)
    failed = post(rserver, "/adjust", {**spec, "ref": "main"}, token=user.token)
    assert failed.status_code == 400
    assert failed.json()["exit_code"] == 3 and "the build is broken" in failed.json()["stderr"]
    queued = post(rserver, "/adjust", {**spec, "ref": "v-none", "callback": {"url": receiver.url + "/adj"}},
                  token=user.token)
    assert queued.status_code == 202
    got = receiver.next()
    assert got["body"]["callback"] == {"status": 400, "id": queued.json()["callback"]["id"]}
    assert got["body"]["exit_code"] == 10
    run_git(git_env, "rm", "-q", "FAIL", cwd=work)
    run_git(git_env, "commit", "-q", "-m", "fixed", cwd=work)
    rserver.git(user, "push", "-q", rserver.repo_url(tenant, repo), "main", cwd=work)
    queued = post(rserver, "/adjust", {**spec, "ref": "main", "callback": {"url": receiver.url + "/adj"}},
                  token=user.token)
    got = receiver.next()
    assert got["body"]["callback"] == {"status": 200, "id": queued.json()["callback"]["id"]}
    assert got["body"]["tag"] == "3.0.redhat-00001"
    # Maven parameters may be bare words (Repour passes "-s settings.xml" on as two words).
    bare = post(rserver, "/adjust", {**spec, "ref": "main",
                                     "adjustParameters": {"ALIGNMENT_PARAMETERS": "-s settings.xml"}}, token=user.token)
    assert bare.status_code == 200, bare.text


def test_cancel_unknown_task(rserver: GitServer) -> None:
    tenant = rserver.new_tenant()
    user = rserver.new_user(tenant)
    resp = post(rserver, "/cancel/no-such-task", None, token=user.token)
    assert resp.status_code == 400 and resp.json() == [{"error_message": "task id no-such-task not found!"}]
    assert post(rserver, "/cancel/no-such-task", None, token="").status_code == 401


# --- cancel from another API replica ---------------------------------------------------------------

def test_cancel_running_adjust_from_a_second_api_process(
        tmp_path: Path, db_url: str, git_env: dict[str, str], receiver: Receiver) -> None:
    srv = start_server(tmp_path, db_url, git_env, tool_env(tmp_path), parts=("ssh", "api", "worker"))
    second = None
    try:
        port = str(__import__("tests.conftest", fromlist=["free_port"]).free_port())
        second = srv.spawn("api", env={"GITSERVER_HTTP_PORT": port})
        second_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(second_url), timeout=60, what="the second API process")
        tenant, repo, user, _work = pushed_repo(srv, git_env, tmp_path, {"SLEEP": "120"})
        task = unique("task")
        spec = {"ref": "main", "internal_url": urls(srv, tenant, repo), "taskId": task,
                "callback": {"url": receiver.url + "/never"}}
        marker = sleeping_tool(spec)
        assert post(srv, "/adjust", spec, token=user.token).status_code == 202
        wait_for(lambda: tool_pids(marker), timeout=60, what="the tool to start")
        resp = requests.post(f"{second_url}/cancel/{task}", headers={"Authorization": f"Bearer {user.token}"},
                             timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json() == [{"message": f"Tasks with task_id: {task} cancelled"}]
        wait_for(lambda: not tool_pids(marker), timeout=5, what="the tool to be killed")

        def status() -> str | None:
            with srv.db() as session:
                from sqlalchemy import select

                from gitserver.db import models
                value = session.scalar(select(models.Pipeline.status).where(models.Pipeline.task_id == task))
                return value if value == "cancelled" else None

        wait_for(status, timeout=10, what="the pipeline to be cancelled")
        # Cancelled like Repour: no callback; a second cancel finds nothing running.
        assert receiver.requests.empty()
        again = requests.post(f"{second_url}/cancel/{task}", headers={"Authorization": f"Bearer {user.token}"},
                              timeout=10)
        assert again.status_code == 400
    finally:
        if second is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(second.pid, 15)
            second.wait(timeout=20)
        srv.stop()


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_cancel_synchronous_adjust(rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    """Without a callback the work runs inside the request; /cancel still reaches it (through
    its pipeline's state) and the waiting client gets Repour's error body."""
    tenant, repo, user, _work = pushed_repo(rserver, git_env, tmp_path, {"SLEEP": "120"})
    task = unique("task")
    spec = {"ref": "main", "internal_url": urls(rserver, tenant, repo), "taskId": task}
    marker = sleeping_tool(spec)
    answers: queue.Queue[requests.Response] = queue.Queue()
    thread = threading.Thread(target=lambda: answers.put(post(rserver, "/adjust", spec, token=user.token)))
    thread.start()
    try:
        wait_for(lambda: tool_pids(marker), timeout=60, what="the tool to start")
        cancel = post(rserver, f"/cancel/{task}", None, token=user.token)
        assert cancel.status_code == 200, cancel.text
        answer = answers.get(timeout=15)
        assert answer.status_code == 400 and answer.json()["error_type"] == "Cancelled"
        wait_for(lambda: not tool_pids(marker), timeout=5, what="the tool to be killed")
    finally:
        thread.join(timeout=30)


def test_adjust_never_writes_through_symlinks(rserver: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    """A hostile tree whose aligned file is a symlink to a server-side file: the tool rewrites
    the checked-out placeholder, never the file the link points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    tenant, repo, user = setup_repo(rserver)
    work = make_repo(tmp_path / unique("work"), git_env, {"VERSION": "5.0\n"})
    (work / "aligned.txt").symlink_to(victim)
    run_git(git_env, "add", "aligned.txt", cwd=work)
    run_git(git_env, "commit", "-q", "-m", "link", cwd=work)
    rserver.git(user, "push", "-q", rserver.repo_url(tenant, repo), "main", cwd=work)
    resp = post(rserver, "/adjust", {"ref": "main", "internal_url": urls(rserver, tenant, repo)}, token=user.token)
    assert resp.status_code == 200, resp.text
    assert victim.read_text() == "untouched\n"


# --- a synchronous request whose API process dies ------------------------------------------------

def test_synchronous_adjust_of_a_killed_api_process_ends_within_the_lease(
        tmp_path: Path, db_url: str, git_env: dict[str, str]) -> None:
    """A synchronous /adjust runs inside the API process under a job lease; SIGKILL that process
    mid-request, and a worker takes the expired lease over and fails the pipeline with a clear
    error (nobody waits for its result) within the lease and a few seconds."""
    lease = 3.0
    srv = start_server(tmp_path, db_url, git_env,
                       {**tool_env(tmp_path), "GITSERVER_JOB_LEASE_SECONDS": str(lease)},
                       parts=("ssh", "api", "worker"))
    marker = ""
    try:
        tenant, repo, user, _work = pushed_repo(srv, git_env, tmp_path, {"SLEEP": "60"})
        task = unique("task")
        spec = {"ref": "main", "internal_url": urls(srv, tenant, repo), "taskId": task}
        marker = sleeping_tool(spec)
        answers: queue.Queue[object] = queue.Queue()

        def call() -> None:
            try:
                answers.put(post(srv, "/adjust", spec, token=user.token))
            except requests.RequestException as exc:
                answers.put(exc)

        threading.Thread(target=call, daemon=True).start()
        wait_for(lambda: tool_pids(marker), timeout=60, what="the tool to start")
        from sqlalchemy import select

        from gitserver.db import models

        with srv.db() as session:
            pipeline = session.scalars(select(models.Pipeline).where(models.Pipeline.task_id == task)).one()
            pipeline_id = pipeline.id
            assert pipeline.status == "running"
            job = session.scalars(select(models.Job).where(models.Job.pipeline_id == pipeline_id)).one()
            # The API process holds the request's lease, as a worker holds a job's.
            assert (job.kind, job.status) == ("repour", "running")
            assert job.lease_owner is not None and job.lease_owner.startswith("api:")

        api = srv.procs.pop("api")
        os.killpg(api.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        api.wait(timeout=10)
        # The client's connection died with the process, and so did the tool it ran.
        assert isinstance(answers.get(timeout=10), requests.RequestException)
        wait_for(lambda: not tool_pids(marker), timeout=5, what="the tool to die with its API process")
        srv.procs["api-restarted"] = srv.spawn("api")
        srv.wait_ready()

        def final() -> tuple[str, str] | None:
            with srv.db() as session:
                row = session.get(models.Pipeline, pipeline_id)
                assert row is not None
                return (row.status, row.error) if row.status in models.FINAL_STATES else None

        status, error = wait_for(final, timeout=lease + 6, interval=0.2, what="the pipeline to end")
        assert time.monotonic() - killed_at < lease + 6
        assert status == "failed" and "API process running this synchronous request stopped" in error

        def job_ended() -> tuple[str, str | None, int] | None:
            # The worker ends the pipeline inside the job, then marks the job itself in its own
            # transaction a moment later: wait for that, never read the job in between.
            with srv.db() as session:
                job = session.scalars(select(models.Job).where(models.Job.pipeline_id == pipeline_id)).one()
                return (job.status, job.lease_owner, job.attempts) if job.status != "running" else None

        assert wait_for(job_ended, timeout=10, interval=0.1, what="the job to end") == ("succeeded", None, 2)
        # What the user sees through the restarted API: the verdict and why.
        shown = srv.api("GET", f"/api/v1/pipelines/{pipeline_id}", token=user.token).json()
        assert (shown["status"], shown["kind"], shown["task_id"]) == ("failed", "adjust", task)
        assert "send the request again" in shown["error"]
        log = srv.api("GET", f"/api/v1/pipelines/{pipeline_id}/log", token=user.token)
        assert "stopped before it finished" in log.text
        # Nothing is left to cancel.
        assert post(srv, f"/cancel/{task}", None, token=user.token).status_code == 400
    finally:
        for pid in tool_pids(marker) if marker else []:
            # Not expected (the tool dies with the process that started it); never leave one.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.stop()


# --- PNC as it really calls: OIDC tokens, PNC's bodies (tests/fixtures/pnc), current tools --------

PNC_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pnc"


def pnc_fixture(name: str) -> Any:
    return json.loads((PNC_FIXTURES / name).read_text())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_pnc_internal_scm_with_oidc_token_then_anonymous_clone(
        rserver: GitServer, issuer: IssuerServer, git_env: dict[str, str], tmp_path: Path) -> None:
    token = issuer.issuer.token()
    body = pnc_fixture("internal-scm-request.json")
    created = requests.post(rserver.http_url + "/internal-scm", json=body, headers=bearer(token), timeout=30)
    assert created.status_code == 200, created.text
    assert created.json() == {"status": "SUCCESS_CREATED",
                              "readwrite_url": f"{rserver.ssh_base}/project-ncl/dingrogu.git",
                              "readonly_url": f"{rserver.http_url}/git/project-ncl/dingrogu.git"}
    with rserver.db() as session:
        from gitserver.admin import repos, tenants

        repo = repos.get_repo(session, tenants.get_tenant(session, "project-ncl"), "dingrogu")
        assert (repo.parent_project, json.loads(repo.owner_groups or "[]"), repo.visibility) == \
            ("jboss-prod-permissions", ["ldap/jboss-prod"], "public")
    shown = rserver.api("GET", "/api/v1/tenants/project-ncl/repos/dingrogu", token=token).json()
    assert (shown["parent_project"], shown["owner_groups"], shown["visibility"]) == \
        ("jboss-prod-permissions", ["ldap/jboss-prod"], "public")
    again = requests.post(rserver.http_url + "/internal-scm", json=body, headers=bearer(token), timeout=30)
    assert again.json()["status"] == "SUCCESS_ALREADY_EXISTS"
    # /clone as PNC sends it (a commit id), into the empty repository: every branch and tag.
    origin = origin_repo(tmp_path, git_env, {"README.md": "dingrogu\n"})
    run_git(git_env, "branch", "feature", cwd=origin)
    sha = run_git(git_env, "rev-parse", "HEAD", cwd=origin).strip()
    clone = {**pnc_fixture("clone-request.json"), "originRepoUrl": f"file://{origin}",
             "targetRepoUrl": created.json()["readwrite_url"], "ref": sha}
    clone.pop("callback")
    resp = requests.post(rserver.http_url + "/clone", json=clone, headers=bearer(token), timeout=120)
    assert resp.status_code == 200, resp.text
    names = remote_refs(rserver, "project-ncl", "dingrogu")
    assert {"refs/heads/main", "refs/heads/feature", "refs/tags/v1", f"refs/tags/repour-sync-{sha}"} <= set(names)
    # A builder clones the read-only URL without any credentials; writing still needs a key.
    anon = tmp_path / "anon"
    run_git(git_env, "-c", "credential.helper=", "clone", "-q", "--depth", "1", "--branch", "v1",
            created.json()["readonly_url"], str(anon))
    assert (anon / "README.md").read_text() == "dingrogu\n"
    # A project without organisation goes to the default tenant (created, as the caller may).
    lone = requests.post(rserver.http_url + "/internal-scm", json={"project": "lonely", "owner_groups": []},
                         headers=bearer(token), timeout=30)
    assert lone.status_code == 200, lone.text
    assert lone.json()["readwrite_url"] == f"{rserver.ssh_base}/pnc-default/lonely.git"


def test_oidc_tokens_refused_with_reasons(rserver: GitServer, issuer: IssuerServer) -> None:
    def call(token: str) -> requests.Response:
        return requests.post(rserver.http_url + "/cancel/no-such-task", headers=bearer(token), timeout=30)

    assert call(issuer.issuer.token()).status_code == 400  # accepted: the task is what is missing
    for token, reason in [(issuer.issuer.token(audience="another-service"), "not meant for this server"),
                          (issuer.issuer.token(lifetime=-300), "expired"),
                          (issuer.issuer.token(iss="https://evil.example.org/realms/pnc"), "not issued by"),
                          # Issue 21: these were 500s with a traceback, and a string exp made a
                          # token (and every token minted with it) that never expires.
                          (issuer.issuer.raw_token({"kid": 7}), "must be a string"),
                          (issuer.issuer.raw_token({"kid": issuer.issuer.kid, "crit": ["x-unknown"]}),
                           "Unsupported critical extension"),
                          (issuer.issuer.raw_token({"kid": issuer.issuer.kid}, exp=str(2 ** 33)),
                           "'exp' claim must be a number")]:
        resp = call(token)
        assert resp.status_code == 401 and reason in resp.json()["desc"], resp.text
        assert "Traceback" not in resp.text
    unmapped = call(issuer.issuer.token(roles=("offline_access",)))
    assert unmapped.status_code == 403 and "oidc_role_map" in unmapped.json()["desc"]
    # The same token on the REST API (every route takes it).
    tenants = rserver.api("GET", "/api/v1/tenants", token=issuer.issuer.token())
    assert tenants.status_code == 200
    # The issuer rotates its key: the first token with the new kid refreshes the keys.
    fetches = issuer.jwks_fetches
    issuer.issuer.rotate()
    time.sleep(2.2)  # past the refresh rate limit (2 s) of every API process
    assert call(issuer.issuer.token()).status_code == 400
    assert issuer.jwks_fetches > fetches


def test_pnc_adjust_current_pme_report_callback_headers_and_context(
        rserver: GitServer, issuer: IssuerServer, git_env: dict[str, str], tmp_path: Path,
        receiver: Receiver, bifrost: BifrostStub) -> None:
    while not bifrost.uploads.empty():  # other tests' adjusts upload too
        bifrost.uploads.get_nowait()
    tenant, repo, user, _work = pushed_repo(rserver, git_env, tmp_path,
                                            {"VERSION": "1.4.0\n", "REPORT": "gav\n", "pom.xml": "<p/>\n"})
    spec = pnc_fixture("adjust-request.json")
    spec["internal_url"] = urls(rserver, tenant, repo)
    spec["callback"]["uri"] = receiver.url + "/adjust/notify"
    context = {"log-user-id": "42", "log-process-context": "build-7", "log-request-context": "req-9",
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    accepted = requests.post(rserver.http_url + "/adjust", json=spec,
                             headers={**bearer(issuer.issuer.token()), **context}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    got = receiver.next()
    assert got["method"] == "POST" and got["path"] == "/adjust/notify"
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert headers["x-pnc-callback"] == "adjust"  # the callback's own headers are sent
    assert all(headers[k] == v for k, v in context.items())  # and the request's context
    # Before the callback, the alignment log went to Bifrost under the same context.
    upload = bifrost.uploads.get(timeout=10)
    assert upload["path"] == "/final-log/upload"
    assert upload["headers"]["log-process-context"] == "build-7"
    assert upload["headers"]["authorization"].startswith("Bearer svc-token-")
    assert b'name="logfile"' in upload["body"]
    assert b"stand-in PME: aligned with" in upload["body"] and b"-DrepoRemovalBackup=repositories-backup.xml" in \
        upload["body"]
    body = got["body"]
    assert body["callback"] == {"status": 200, "id": accepted.json()["callback"]["id"]}, body
    assert body["tag"] == "1.4.0.redhat-00001"
    assert body["url"] == spec["internal_url"]
    assert body["adjustResultData"] == {
        "VersioningState": {"executionRootModified": {"groupId": "org.example", "artifactId": "demo",
                                                      "version": "1.4.0.redhat-00001"}},
        "RemovedRepositories": [{"releases": True, "snapshots": False, "name": "Central", "id": "central",
                                 "url": "https://repo.example.org/"}]}
    names = remote_refs(rserver, tenant, repo)
    assert names[f"refs/heads/branch-repour-{body['tag']}-{body['commit']}"] == body["commit"]
    clone = http_clone_tag(rserver, git_env, user, body["url"]["readonly"], body["tag"], tmp_path / "c")
    assert not (clone / "target" / "alignmentReport.json").exists()
    # RPM: refused as Reqour refuses it; MVN_RPM is a Maven build.
    sync_spec = {"ref": "main", "internal_url": spec["internal_url"]}
    rpm = post(rserver, "/adjust", {**sync_spec, "buildType": "RPM"}, token=user.token)
    assert rpm.status_code == 400 and rpm.json()["desc"] == "Alignment for RPM builds is not supported yet"
    assert len(rpm.json()["error_traceback"]) == 32
    mvn_rpm = post(rserver, "/adjust", {**sync_spec, "buildType": "MVN_RPM"}, token=user.token)
    assert mvn_rpm.status_code == 200, mvn_rpm.text
    assert mvn_rpm.json()["adjustResultData"]["VersioningState"]["executionRootModified"]["version"] == body["tag"]


def test_version_cors_and_translation_without_organisation(rserver: GitServer) -> None:
    version = requests.get(rserver.http_url + "/version", timeout=10)
    assert version.headers["Access-Control-Allow-Origin"] == "*"
    lone = requests.post(rserver.http_url + "/git-external-to-internal",
                         json={"external_url": "https://gerrit.example.org/gerrit/lonely.git"}, timeout=10)
    assert lone.status_code == 200 and lone.json()["internal_url"] == f"{rserver.ssh_base}/pnc-default/lonely.git"


def test_reqour_face_with_dingrogu_bodies(rserver: GitServer, issuer: IssuerServer, git_env: dict[str, str],
                                          tmp_path: Path, receiver: Receiver) -> None:
    headers = bearer(issuer.issuer.token(roles=("pnc-users-admin",)))
    tenant = unique("reqour")
    scm = {**pnc_fixture("reqour-internal-scm-request.json"), "project": f"{tenant}/dingrogu"}
    scm["callback"]["uri"] = receiver.url + "/scm"
    accepted = requests.post(rserver.http_url + "/internal-scm", json=scm, headers=headers, timeout=30)
    assert accepted.status_code == 202, accepted.text
    got = receiver.next()["body"]
    assert got == {"readonlyUrl": f"{rserver.http_url}/git/{tenant}/dingrogu.git",
                   "readwriteUrl": f"{rserver.ssh_base}/{tenant}/dingrogu.git", "status": "SUCCESS_CREATED",
                   "callback": {"status": "SUCCESS", "id": scm["taskId"]}}
    # Clone the upstream project into it, then adjust, as dingrogu's workflow asks Reqour to.
    origin = make_repo(tmp_path / "origin", git_env, {"VERSION": "2.1.0\n", "REPORT": "rootGAV\n"})
    clone = {**pnc_fixture("reqour-clone-request.json"), "originRepoUrl": f"file://{origin}",
             "targetRepoUrl": got["readwriteUrl"]}
    clone["callback"]["uri"] = receiver.url + "/clone"
    accepted = requests.post(rserver.http_url + "/clone", json=clone, headers=headers, timeout=30)
    assert accepted.status_code == 202, accepted.text
    assert receiver.next()["body"] == {"originRepoUrl": clone["originRepoUrl"], "targetRepoUrl": got["readwriteUrl"],
                                       "ref": "main", "callback": {"status": "SUCCESS", "id": clone["taskId"]}}
    adjust = pnc_fixture("reqour-adjust-request.json")
    adjust["internalUrl"] = {"readonlyUrl": got["readonlyUrl"], "readwriteUrl": got["readwriteUrl"]}
    adjust["callback"]["uri"] = receiver.url + "/adjust"
    beats = Receiver()  # Rex's heartbeat endpoint
    adjust["heartbeatConfig"] = {"request": {"method": "POST", "uri": beats.url + "/rest/tasks/9/heartbeat",
                                             "headers": [{"name": "X-Rex", "value": "beat"}], "attachment": None},
                                 "delay": 200, "delayTimeUnit": "MILLISECONDS"}
    try:
        accepted = requests.post(rserver.http_url + "/adjust", json=adjust, headers=headers, timeout=30)
        assert accepted.status_code == 202, accepted.text
        result = receiver.next()["body"]
        # The first beat goes out when the adjust starts, before its result.
        beat = beats.next(timeout=5)
        assert beat["method"] == "POST" and beat["path"] == "/rest/tasks/9/heartbeat"
        assert beat["headers"]["X-Rex"] == "beat"
    finally:
        beats.close()
    assert result["callback"] == {"status": "SUCCESS", "id": adjust["taskId"]}, result
    assert result["tag"] == "2.1.0.redhat-00001" and result["internalUrl"] == adjust["internalUrl"]
    assert result["manipulatorResult"]["versioningState"] == {"executionRootName": "org.example:demo",
                                                              "executionRootVersion": "2.1.0.redhat-00001"}
    assert result["manipulatorResult"]["removedRepositories"][0]["id"] == "central"
    assert set(result) == {"tag", "downstreamCommit", "internalUrl", "upstreamCommit", "isRefRevisionInternal",
                           "manipulatorResult", "callback"}
    # A failure: Reqour's status and exceptionResolution.
    failing = {**adjust, "ref": "no-such-ref", "taskId": "1234599"}
    assert requests.post(rserver.http_url + "/adjust", json=failing, headers=headers, timeout=30).status_code == 202
    failed = receiver.next()["body"]
    assert failed["callback"]["status"] == "FAILED" and failed["callback"]["id"] == "1234599"
    assert "no-such-ref" in failed["callback"]["exceptionResolution"]["reason"]
    # Translation and cancel in Reqour's spelling.
    translated = requests.post(rserver.http_url + "/external-to-internal",
                               json=pnc_fixture("reqour-translate-request.json"), timeout=30)
    assert translated.json() == {"externalUrl": "https://github.com/project-ncl/dingrogu.git",
                                 "internalUrl": f"{rserver.ssh_base}/project-ncl/dingrogu.git"}
    cancel = {"taskId": "no-such-task", "callback": {"method": "POST", "uri": receiver.url + "/cancel", "headers": []}}
    assert requests.post(rserver.http_url + "/cancel", json=cancel, headers=headers, timeout=30).status_code == 202
    assert receiver.next()["body"] == {"callback": {"status": "FAILED", "id": "no-such-task",
                                                    "exceptionResolution": {
                                                        "reason": "task id no-such-task not found",
                                                        "proposal": reqour._PROPOSAL_FAILED}}}
