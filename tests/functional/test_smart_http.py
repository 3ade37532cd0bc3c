"""Read-only smart HTTP as a build system meets it: the real git client against ``gitserver
serve`` on loopback, repositories filled over SSH, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import requests

from gitserver.git.http import pkt_line
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo

UPLOAD_PACK = "?service=git-upload-pack"
REQUEST_TYPE = "application/x-git-upload-pack-request"
DEFAULT_LIMIT = 10 * 1024 * 1024


@pytest.fixture
def acme(server: GitServer, tmp_path: Path) -> dict[str, object]:
    """A tenant with an admin, a member, a public and a private repository (both pushed)."""
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    public = server.new_repo(tenant, visibility="public")
    private = server.new_repo(tenant, visibility="private")
    work = make_repo(tmp_path / "work", server.git_env, {"README.md": "hello\n", "src/a.txt": "a\n"})
    for repo in (public, private):
        server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", cwd=work)
    return {"tenant": tenant, "admin": admin, "member": member, "public": public,
            "private": private, "work": work}


def http_url(server: GitServer, tenant: str, repo: str, token: str | None = None,
             suffix: str = ".git") -> str:
    auth = f"x:{token}@" if token else ""
    return f"http://{auth}127.0.0.1:{server.http_port}/git/{tenant}/{repo}{suffix}"


def http_git(server: GitServer, *args: str, cwd: Path | None = None, check: bool = True,
             env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real git client over HTTP (no SSH, no credential helper, no prompts)."""
    result = subprocess.run(["git", *args], cwd=cwd, env={**server.git_env, **(env or {})},
                            text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def rev_parse(path: Path, rev: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", "rev-parse", rev], cwd=path, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def metric(server: GitServer, prefix: str) -> float:
    text = requests.get(server.http_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def raw_request(server: GitServer, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, str]:
    """One request with the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


# --- cloning -----------------------------------------------------------------------------------

def test_public_repo_clones_anonymously(server: GitServer, tmp_path: Path,
                                        acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["public"])
    rpc = 'gitserver_http_git_sessions_total{kind="rpc",service="upload-pack"}'
    sent = 'gitserver_http_git_bytes_total{direction="sent"}'
    before_rpc, before_sent = metric(server, rpc), metric(server, sent)
    http_git(server, "clone", "-q", http_url(server, tenant, repo), str(tmp_path / "c1"))
    assert (tmp_path / "c1" / "src" / "a.txt").read_text() == "a\n"
    # The URL without ".git" names the same repository.
    http_git(server, "clone", "-q", http_url(server, tenant, repo, suffix=""), str(tmp_path / "c2"))
    assert rev_parse(tmp_path / "c2", "HEAD", server.git_env) == rev_parse(
        Path(acme["work"]), "HEAD", server.git_env)  # type: ignore[arg-type]
    assert metric(server, rpc) >= before_rpc + 2
    assert metric(server, sent) > before_sent


def test_private_repo_needs_a_token(server: GitServer, tmp_path: Path,
                                    acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["private"])
    admin: User = acme["admin"]  # type: ignore[assignment]
    anonymous = http_git(server, "clone", http_url(server, tenant, repo), str(tmp_path / "no"),
                         check=False)
    assert anonymous.returncode != 0
    # git was asked for credentials (and could not prompt): the 401 carried a Basic challenge.
    assert "could not read Username" in anonymous.stderr
    resp = requests.get(http_url(server, tenant, repo) + "/info/refs" + UPLOAD_PACK, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="gitserver"'
    # A repository that does not exist looks the same to an anonymous caller.
    missing = requests.get(http_url(server, tenant, "nosuchrepo") + "/info/refs" + UPLOAD_PACK,
                           timeout=10)
    assert (missing.status_code, missing.text) == (resp.status_code, resp.text)

    http_git(server, "clone", "-q", http_url(server, tenant, repo, admin.token), str(tmp_path / "basic"))
    assert (tmp_path / "basic" / "README.md").read_text() == "hello\n"
    bearer = ["-c", f"http.extraHeader=Authorization: Bearer {admin.token}"]
    http_git(server, *bearer, "clone", "-q", http_url(server, tenant, repo), str(tmp_path / "bearer"))
    assert (tmp_path / "bearer" / "README.md").read_text() == "hello\n"

    bad = http_git(server, "clone", http_url(server, tenant, repo, "gst_not-a-token"),
                   str(tmp_path / "bad"), check=False)
    assert bad.returncode != 0 and "Authentication failed" in bad.stderr


def test_member_without_read_sees_not_found(server: GitServer, tmp_path: Path,
                                            acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["private"])
    member: User = acme["member"]  # type: ignore[assignment]
    hidden = http_git(server, "clone", http_url(server, tenant, repo, member.token),
                      str(tmp_path / "hidden"), check=False)
    missing = http_git(server, "clone", http_url(server, tenant, "nosuchrepo", member.token),
                       str(tmp_path / "missing"), check=False)
    assert hidden.returncode != 0 and missing.returncode != 0
    assert "not found" in hidden.stderr
    assert (hidden.stderr.replace(repo, "R").replace(str(tmp_path / "hidden"), "D")
            == missing.stderr.replace("nosuchrepo", "R").replace(str(tmp_path / "missing"), "D"))
    # Another tenant's user cannot tell the private repository exists either.
    stranger = server.new_user(server.new_tenant())
    other = requests.get(http_url(server, tenant, repo) + "/info/refs" + UPLOAD_PACK,
                         auth=("x", stranger.token), timeout=10)
    assert other.status_code == 404
    # A read grant opens it.
    with server.db() as session:
        from gitserver.admin import grants, repos, tenants, users

        t = tenants.get_tenant(session, tenant)
        row = repos.get_repo(session, t, repo)
        grants.set_grant(session, row, "read", user=users.get_user(session, t, member.name))
    http_git(server, "clone", "-q", http_url(server, tenant, repo, member.token), str(tmp_path / "ok"))


def test_protocol_v2_v1_v0_ls_remote(server: GitServer, acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["public"])
    head = rev_parse(Path(acme["work"]), "HEAD", server.git_env)  # type: ignore[arg-type]
    url = http_url(server, tenant, repo)
    v2 = http_git(server, "-c", "protocol.version=2", "ls-remote", url, env={"GIT_TRACE_PACKET": "1"})
    assert f"{head}\trefs/heads/main" in v2.stdout
    assert "version 2" in v2.stderr  # the server spoke v2: Git-Protocol reached git
    v0 = http_git(server, "-c", "protocol.version=0", "ls-remote", url, env={"GIT_TRACE_PACKET": "1"})
    assert f"{head}\trefs/heads/main" in v0.stdout
    assert "version 2" not in v0.stderr
    v1 = http_git(server, "-c", "protocol.version=1", "ls-remote", url, env={"GIT_TRACE_PACKET": "1"})
    assert f"{head}\trefs/heads/main" in v1.stdout and "version 1" in v1.stderr
    # A Git-Protocol header git would never send does not reach git: the answer is v0.
    for header in ("version=9", "version=2:x=y", "GIT_DIR=/etc"):
        resp = requests.get(url + "/info/refs" + UPLOAD_PACK, headers={"Git-Protocol": header},
                            timeout=10)
        assert resp.status_code == 200
        assert resp.content.startswith(b"001e# service=git-upload-pack\n0000")
        assert b"version 2" not in resp.content and head.encode() in resp.content


def test_shallow_clone_by_tag(server: GitServer, tmp_path: Path, acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["public"])
    admin: User = acme["admin"]  # type: ignore[assignment]
    work = Path(acme["work"])  # type: ignore[arg-type]
    commit_files(work, server.git_env, {"src/a.txt": "tagged\n"}, "release")
    subprocess.run(["git", "tag", "-a", "-m", "release 1", "release-1"], cwd=work,
                   env=server.git_env, check=True)
    commit_files(work, server.git_env, {"src/a.txt": "after the tag\n"}, "later")
    server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", "release-1", cwd=work)

    clone = tmp_path / "shallow"
    http_git(server, "clone", "-q", "--depth", "1", "--branch", "release-1",
             http_url(server, tenant, repo), str(clone))
    assert (clone / "src" / "a.txt").read_text() == "tagged\n"
    assert (clone / ".git" / "shallow").is_file()
    count = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=clone, env=server.git_env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert count == "1"
    assert rev_parse(clone, "HEAD^{tree}", server.git_env) == rev_parse(
        work, "release-1^{tree}", server.git_env)


def test_shallow_clone_by_archive_tag(server: GitServer, tmp_path: Path,
                                      acme: dict[str, object]) -> None:
    """What a builder does with Repour coordinates: the pipeline's archive tag, over HTTP."""
    from gitserver.db import models

    tenant, repo = str(acme["tenant"]), str(acme["private"])
    admin: User = acme["admin"]  # type: ignore[assignment]
    work = Path(acme["work"])  # type: ignore[arg-type]
    commit_files(work, server.git_env, {"src/a.txt": "archived\n"}, "to archive")
    pushed = server.git(admin, "push", server.repo_url(tenant, repo), "main", cwd=work)
    pipeline_id = int(pushed.stderr.split("pipeline ", 1)[1].split()[0])

    def archived() -> str | None:
        with server.db() as session:
            row = session.get(models.Pipeline, pipeline_id)
            assert row is None or row.status not in ("failed", "cancelled"), row.status
            return row.archive_tag if row is not None and row.status == "succeeded" else None

    tag = wait_for(archived, timeout=60, interval=0.1, what=f"pipeline {pipeline_id}")
    assert tag and tag.startswith("repour-")
    clone = tmp_path / "builder"
    http_git(server, "clone", "-q", "--depth", "1", "--branch", tag,
             http_url(server, tenant, repo, admin.token), str(clone))
    assert (clone / "src" / "a.txt").read_text() == "archived\n"
    assert rev_parse(clone, "HEAD^{tree}", server.git_env) == rev_parse(work, "HEAD^{tree}",
                                                                        server.git_env)


def test_partial_clone_blob_none(server: GitServer, tmp_path: Path, acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["public"])
    admin: User = acme["admin"]  # type: ignore[assignment]
    work = Path(acme["work"])  # type: ignore[arg-type]
    commit_files(work, server.git_env, {"src/a.txt": "second version\n", "big.txt": "x" * 5000})
    server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", cwd=work)

    clone = tmp_path / "partial"
    http_git(server, "clone", "-q", "--no-checkout", "--filter=blob:none",
             http_url(server, tenant, repo), str(clone))
    objects = subprocess.run(["git", "rev-list", "--objects", "--all", "--missing=print"], cwd=clone,
                             env=server.git_env, capture_output=True, text=True, check=True).stdout
    assert any(line.startswith("?") for line in objects.splitlines()), "no blob was left out"
    # Checking out fetches the missing blobs on demand, by id, over HTTP.
    http_git(server, "checkout", "-q", "main", cwd=clone)
    assert (clone / "src" / "a.txt").read_text() == "second version\n"
    assert (clone / "big.txt").read_text() == "x" * 5000


def _log_count(server: GitServer, needle: str) -> int:
    return sum(p.read_text(errors="replace").count(needle) for p in server.log_dir.glob("*.log"))


def test_finished_clones_are_not_logged_as_clients_gone(server: GitServer, tmp_path: Path,
                                                        acme: dict[str, object]) -> None:
    """git may still be exiting when the last byte of its answer has been sent; a clone that
    got everything is not "stopped git upload-pack (client gone or request refused)"."""
    tenant, repo = str(acme["tenant"]), str(acme["public"])
    gone = "client gone or request refused"
    before = _log_count(server, gone)
    for n, options in enumerate((["-q"], ["-q", "--depth", "1"], ["-q", "--filter=blob:none"]) * 2):
        http_git(server, "clone", *options, http_url(server, tenant, repo), str(tmp_path / f"c{n}"))
    assert _log_count(server, gone) == before, server.logs()


# --- refusals ----------------------------------------------------------------------------------

def test_push_over_http_is_refused(server: GitServer, acme: dict[str, object]) -> None:
    tenant, repo = str(acme["tenant"]), str(acme["private"])
    admin: User = acme["admin"]  # type: ignore[assignment]
    work = Path(acme["work"])  # type: ignore[arg-type]
    commit_files(work, server.git_env, {"new.txt": "new\n"})
    message = f"gitserver accepts pushes over SSH only: {server.ssh_base}/{tenant}/{repo}.git"
    pushed = http_git(server, "push", http_url(server, tenant, repo, admin.token), "main", cwd=work,
                      check=False)
    assert pushed.returncode != 0
    assert f"remote: {message}" in pushed.stderr
    base = http_url(server, tenant, repo)
    resp = requests.get(base + "/info/refs?service=git-receive-pack", timeout=10)
    assert (resp.status_code, resp.text) == (403, message + "\n")
    assert resp.headers["Content-Type"].startswith("text/plain")
    resp = requests.post(base + "/git-receive-pack", data=b"0000", auth=("x", admin.token),
                         headers={"Content-Type": "application/x-git-receive-pack-request"},
                         timeout=10)
    assert (resp.status_code, resp.text) == (403, message + "\n")
    # Nothing moved on the server.
    assert "new.txt" not in subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "main"], cwd=server.repo_path(tenant, repo),
        env=server.git_env, capture_output=True, text=True, check=True).stdout


def test_other_services_and_dumb_http_are_refused(server: GitServer, acme: dict[str, object]) -> None:
    base = http_url(server, str(acme["tenant"]), str(acme["public"]))
    resp = requests.get(base + "/info/refs?service=git-upload-archive", timeout=10)
    assert resp.status_code == 400 and "'git-upload-archive'" in resp.text
    resp = requests.get(base + "/info/refs", timeout=10)
    assert resp.status_code == 400 and "smart HTTP" in resp.text
    resp = requests.post(base + "/git-upload-pack", data=b"0000", timeout=10,
                         headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415
    resp = requests.post(base + "/git-upload-pack", data=b"garbage", timeout=10,
                         headers={"Content-Type": REQUEST_TYPE})
    assert resp.status_code == 400 and "could not answer" in resp.text


@pytest.mark.parametrize("path", [
    "/git/%2e%2e/r.git/info/refs",
    "/git/t/%2e%2e.git/info/refs",
    "/git/t/..%2f..%2fetc%2fpasswd/info/refs",
    "/git/../../etc/passwd/info/refs",
    "/git//etc/passwd/info/refs",
    "/git/t/%2fetc%2fpasswd/info/refs",
    "/git/t/r.git.git/info/refs",
    "/git/-t/r.git/info/refs",
    "/git/t/r%00x.git/info/refs",
    "/git/t/r%0aid.git/info/refs",
    "/git/t/%C3%A9t%C3%A9.git/info/refs",
    "/git/t/" + "a" * 3000 + ".git/info/refs",
])
def test_hostile_paths_are_refused(server: GitServer, path: str) -> None:
    status, body = raw_request(server, "GET", path + UPLOAD_PACK)
    assert 400 <= status < 500, (status, body)
    assert "root:" not in body
    status, _ = raw_request(server, "POST", path.replace("/info/refs", "/git-upload-pack"),
                            {"Content-Type": REQUEST_TYPE}, b"0000")
    assert 400 <= status < 500


def test_request_line_beyond_any_name_is_refused(server: GitServer) -> None:
    # Far past any valid name (100 characters): the HTTP server refuses the line itself.
    assert 400 <= raw_request(server, "GET", "/git/t/" + "b" * 10000 + "/info/refs")[0] < 500
    assert requests.get(server.http_url + "/healthz", timeout=10).status_code == 200


# --- request bodies ----------------------------------------------------------------------------

def _ls_refs_request() -> bytes:
    return pkt_line(b"command=ls-refs\n") + b"0001" + pkt_line(b"peel\n") + b"0000"


def test_gzip_request_body(server: GitServer, acme: dict[str, object]) -> None:
    base = http_url(server, str(acme["tenant"]), str(acme["public"]))
    headers = {"Content-Type": REQUEST_TYPE, "Git-Protocol": "version=2"}
    plain = requests.post(base + "/git-upload-pack", data=_ls_refs_request(), headers=headers,
                          timeout=10)
    zipped = requests.post(base + "/git-upload-pack", data=gzip.compress(_ls_refs_request()),
                           headers={**headers, "Content-Encoding": "gzip"}, timeout=10)
    # A generator body goes out with Transfer-Encoding: chunked (no Content-Length), as git
    # sends requests larger than http.postBuffer.
    chunked = requests.post(base + "/git-upload-pack", timeout=10, headers=headers,
                            data=(bytes([b]) for b in _ls_refs_request()))
    assert plain.status_code == zipped.status_code == chunked.status_code == 200
    assert chunked.content == plain.content
    assert plain.headers["Content-Type"] == "application/x-git-upload-pack-result"
    assert b"refs/heads/main" in zipped.content and zipped.content == plain.content
    bad = requests.post(base + "/git-upload-pack", data=b"not gzip",
                        headers={**headers, "Content-Encoding": "gzip"}, timeout=10)
    assert bad.status_code == 400 and "gzip" in bad.text


def test_request_body_limit(server: GitServer, acme: dict[str, object]) -> None:
    base = http_url(server, str(acme["tenant"]), str(acme["public"]))
    path = base.split(str(server.http_port), 1)[1] + "/git-upload-pack"
    # Declared too large: refused before a byte of the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", REQUEST_TYPE)
        conn.putheader("Content-Length", str(DEFAULT_LIMIT + 1))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert "http_git_max_request_bytes" in resp.read().decode()
    finally:
        conn.close()
    # A small gzip body that inflates past the limit (a v2 fetch with endless haves, which git
    # keeps reading): refused while decoding, still with a clean 413.
    have = pkt_line(b"have " + b"1" * 40 + b"\n")
    bomb = pkt_line(b"command=fetch\n") + b"0001" + have * (DEFAULT_LIMIT // len(have) + 10)
    resp = requests.post(base + "/git-upload-pack", data=gzip.compress(bomb), timeout=60,
                         headers={"Content-Type": REQUEST_TYPE, "Content-Encoding": "gzip",
                                  "Git-Protocol": "version=2"})
    assert resp.status_code == 413, resp.text
    assert "larger than this server's limit" in resp.text


# --- large transfers ---------------------------------------------------------------------------

SIZE = 20 * 1024 * 1024


@pytest.fixture
def big_public_repo(server: GitServer, tmp_path: Path) -> tuple[str, str, str]:
    """A public repository holding one ~20 MB random (incompressible) blob; its sha256."""
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    data = random.Random(20).randbytes(SIZE)
    work = make_repo(tmp_path / "bigwork", server.git_env, {"blob.bin": data})
    server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", cwd=work, timeout=300)
    return tenant, repo, hashlib.sha256(data).hexdigest()


def test_large_clone_is_byte_exact(server: GitServer, tmp_path: Path,
                                   big_public_repo: tuple[str, str, str]) -> None:
    tenant, repo, digest = big_public_repo
    clone = tmp_path / "bigclone"
    started = time.monotonic()
    http_git(server, "clone", "-q", http_url(server, tenant, repo), str(clone), timeout=300)
    elapsed = time.monotonic() - started
    assert hashlib.sha256((clone / "blob.bin").read_bytes()).hexdigest() == digest
    print(f"HTTP clone of a {SIZE >> 20} MiB random blob: {elapsed:.2f}s")


def _upload_packs_for(path: Path) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ("upload-pack" in cmdline or "pack-objects" in cmdline) and str(path) in cmdline:
            found.append(f"{pid}: {cmdline}")
        elif "pack-objects" in cmdline:
            try:  # pack-objects runs in the repository with no path on its command line
                if os.readlink(f"/proc/{pid}/cwd") == str(path):
                    found.append(f"{pid}: {cmdline}")
            except OSError:
                continue
    return found


def test_client_gone_mid_clone_stops_git(server: GitServer, big_public_repo: tuple[str, str, str]) -> None:
    tenant, repo, _ = big_public_repo
    base = http_url(server, tenant, repo)
    refs = requests.post(base + "/git-upload-pack", data=_ls_refs_request(), timeout=10,
                         headers={"Content-Type": REQUEST_TYPE, "Git-Protocol": "version=2"})
    head = refs.content.split(b" refs/heads/main")[0][-40:].decode()
    fetch = (pkt_line(b"command=fetch\n") + b"0001" + pkt_line(f"want {head}\n".encode())
             + pkt_line(b"no-progress\n") + pkt_line(b"done\n") + b"0000")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.request("POST", f"/git/{tenant}/{repo}.git/git-upload-pack", body=fetch,
                 headers={"Content-Type": REQUEST_TYPE, "Git-Protocol": "version=2"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read(65536)
    repo_path = server.repo_path(tenant, repo).resolve()
    assert _upload_packs_for(repo_path), "git is not serving the fetch"
    conn.sock.close()  # the client vanishes mid-pack, without reading on
    conn.close()
    deadline = time.monotonic() + 20
    while (left := _upload_packs_for(repo_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
