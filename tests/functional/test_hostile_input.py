"""What a hostile outsider's probes found (the security round): each answers a clear 4xx
naming what was wrong, never a 500, and the console's raw files keep a well-formed
Content-Disposition whatever the pushed file is called. Against the real ``gitserver serve``
on SQLite and PostgreSQL (a lock's over-long ref name only failed on PostgreSQL, whose column
is bounded)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from select import select as wait_readable
from typing import Any

import requests
from sqlalchemy import select

from gitserver.db import models
from tests.functional.conftest import GitServer, make_repo
from tests.functional.console_helpers import signed_in
from tests.functional.lfs_support import LFS_HEADERS, lfs_base


def _lfs_post(server: GitServer, base: str, path: str, token: str, data: bytes) -> requests.Response:
    return requests.post(base + path, data=data, timeout=30,
                         headers={**LFS_HEADERS, "Authorization": f"Bearer {token}"})


def test_lfs_bodies_nested_too_deeply_or_naming_huge_ids_are_bad_requests(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    base = lfs_base(server, tenant, repo)
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/objects/batch", "/locks", "/locks/verify", "/verify"):
        answer = _lfs_post(server, base, path, user.token, deep)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "nested too deeply" in answer.json()["message"]
    for body in (b'{"cursor": 1000000000000000000000000000000}', b'{"cursor": -1}'):
        answer = _lfs_post(server, base, "/locks/verify", user.token, body)
        assert answer.status_code == 400 and answer.json()["message"].startswith("cursor"), answer.text
    unlock = _lfs_post(server, base, "/locks/1000000000000000000000000/unlock", user.token, b"{}")
    assert unlock.status_code == 404, unlock.text


def test_a_lock_with_an_over_long_ref_name_is_refused_naming_the_field(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    base = lfs_base(server, tenant, repo)
    body = b'{"path": "a.bin", "ref": {"name": "refs/heads/' + b"x" * 5000 + b'"}}'
    answer = _lfs_post(server, base, "/locks", user.token, body)
    assert answer.status_code == 400 and "ref.name" in answer.json()["message"], answer.text
    listed = requests.get(base + "/locks", timeout=30, headers={**LFS_HEADERS, "Authorization": f"Bearer {user.token}"})
    assert listed.json()["locks"] == []  # nothing was kept


def test_raw_files_named_to_break_the_download_header(server: GitServer, git_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A pushed name with a quote, CR or LF cannot end the filename parameter or the header."""
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    names = ['q"; filename*=UTF-8\'\'evil.html; x=".svg', "nl\nX-Evil: 1.svg", "cr\rX-Evil: 1.svg",
             "back\\slash.svg"]
    work = make_repo(tmp_path / "w", git_env, {name: b"<svg/>" for name in names})
    server.git(user, "push", server.repo_url(tenant, repo), "main", cwd=work)
    http = signed_in(server, user)
    for name in names:
        raw = http.get(f"{server.http_url}/ui/{tenant}/{repo}/raw?path={urllib.parse.quote(name)}", timeout=30)
        assert raw.status_code == 200, (name, raw.status_code)
        assert raw.headers["Content-Type"] == "application/octet-stream" and "X-Evil" not in raw.headers
        disposition = raw.headers["Content-Disposition"]
        assert re.fullmatch(r'attachment; filename="[^"\\\r\n]*"', disposition), disposition


def test_a_nul_in_a_console_path_names_no_file(server: GitServer, git_env: dict[str, str],
                                               tmp_path: Path) -> None:
    """libgit2 reads a path as a C string: ``x.svg%00.txt`` would serve x.svg as text/plain."""
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    work = make_repo(tmp_path / "w", git_env, {"x.svg": b"<svg onload=alert(1)>"})
    server.git(user, "push", server.repo_url(tenant, repo), "main", cwd=work)
    http = signed_in(server, user)
    for page in ("raw", "blob", "tree"):
        answer = http.get(f"{server.http_url}/ui/{tenant}/{repo}/{page}?path=x.svg%00.txt", timeout=30)
        assert answer.status_code == 404, (page, answer.status_code, answer.headers.get("Content-Type"))


def _pkt(text: str) -> bytes:
    data = text.encode() + b"\n"
    return f"{len(data) + 4:04x}".encode() + data


def test_git_lfs_transfer_does_not_buffer_an_endless_section(server: GitServer) -> None:
    """A reader of the repository sends data lines and never a flush: the daemon (one process
    for every SSH user) refuses after a bound and ends the channel, instead of buffering for
    ever. stdin stays open, so only the server's bound can end the wait."""
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "read"})
    argv = [*server.ssh_command(user.key_path), "-p", str(server.ssh_port), "git@127.0.0.1",
            "git-lfs-transfer", f"{tenant}/{repo}", "download"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=server.git_env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # The daemon may end the channel before all of it is written: that is the bound at work.
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(_pkt("batch") + _pkt("a" * 64 + " 1") * 20_000)
            proc.stdin.flush()
        out = _read_until(proc.stdout, b"0000", after=b"status ", timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert b"status 400" in out and b"lines" in out, out[-300:]


def _read_until(stream: Any, end: bytes, after: bytes, timeout: float) -> bytes:
    """Bytes from ``stream`` until ``end`` follows ``after`` (or the timeout, or EOF)."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = wait_readable([stream], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        got += chunk
        if after in got and got.rstrip(b"\n").endswith(end) and got.index(after) < got.rindex(end):
            break
    return got


def test_git_lfs_transfer_refuses_a_lock_with_an_over_long_ref_name(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    argv = [*server.ssh_command(user.key_path), "-p", str(server.ssh_port), "git@127.0.0.1",
            "git-lfs-transfer", f"{tenant}/{repo}", "upload"]
    request = (_pkt("lock") + _pkt("path=a.bin") + _pkt("refname=refs/heads/" + "x" * 5000) + b"0000"
               + _pkt("quit") + b"0000")
    result = subprocess.run(argv, input=request, capture_output=True, env=server.git_env, timeout=60)
    answers = result.stdout.split(b"0000")
    assert b"status 400" in answers[1] and b"ref.name" in answers[1], result.stdout[-300:]
    with server.db() as session:
        assert not session.scalars(select(models.LfsLock).where(models.LfsLock.path == "a.bin")).all()


def test_an_lfs_action_token_dies_with_its_users_account_and_role(server: GitServer) -> None:
    """A RemoteAuth header stands for the login that preceded it, not for the account as it
    was: disabling the user, or taking back their admin role, takes effect at once."""
    tenant = server.new_tenant()
    admin, member = server.new_user(tenant, role="admin"), server.new_user(tenant)
    repo = server.new_repo(tenant, grants={member.name: "read"})  # the admin reads it by role
    base = lfs_base(server, tenant, repo)
    body = b'{"operation": "download", "objects": [{"oid": "' + b"a" * 64 + b'", "size": 1}]}'

    def remote_auth(user: Any) -> str:
        """git-lfs-authenticate's header, as the SSH daemon issues it."""
        result = server.ssh(user, "git-lfs-authenticate", f"{tenant}/{repo}", "download")
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["header"]["Authorization"])

    def batch_with(header: str) -> int:
        return requests.post(base + "/objects/batch", data=body, timeout=30,
                             headers={**LFS_HEADERS, "Authorization": header}).status_code

    member_header, admin_header = remote_auth(member), remote_auth(admin)
    assert batch_with(member_header) == batch_with(admin_header) == 200
    with server.db() as session:
        session.get(models.User, member.id).disabled = True
        session.get(models.User, admin.id).role = models.ROLE_MEMBER
    assert batch_with(member_header) == 401
    assert batch_with(admin_header) == 404  # a member without a grant: the repository is hidden


def test_an_lfs_token_dies_with_the_credential_it_came_from(server: GitServer) -> None:
    """A RemoteAuth header records the SSH key, deploy key or API token it was issued for:
    once that is removed or revoked, the header is refused (401, saying so) although the
    account itself is still fine and the header has not expired."""
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    base = lfs_base(server, tenant, repo)
    body = b'{"operation": "download", "objects": [{"oid": "' + b"a" * 64 + b'", "size": 1}]}'
    users = f"/api/v1/tenants/{tenant}/users/{user.name}"

    def remote_auth(key: Any) -> str:
        result = server.ssh(key, "git-lfs-authenticate", f"{tenant}/{repo}", "download")
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["header"]["Authorization"])

    def batch_with(header: str, url: str = base) -> requests.Response:
        return requests.post(url + "/objects/batch", data=body, timeout=30,
                             headers={**LFS_HEADERS, "Authorization": header})

    # A user's SSH key: a second key keeps the account able to log in.
    header = remote_auth(user)
    assert batch_with(header).status_code == 200
    [key] = server.api("GET", f"{users}/keys").json()["items"]
    assert server.api("DELETE", f"{users}/keys/{key['id']}").status_code == 204
    refused = batch_with(header)
    assert refused.status_code == 401 and "SSH key" in refused.json()["message"], refused.text

    # A deploy key.
    deploy_path, public = server.new_key("deploy")
    deploys = f"/api/v1/tenants/{tenant}/repos/{repo}/deploy-keys"
    deploy = server.api("POST", deploys, {"key": public}).json()
    header = remote_auth(deploy_path)
    assert batch_with(header).status_code == 200
    assert server.api("DELETE", f"{deploys}/{deploy['id']}").status_code == 204
    refused = batch_with(header)
    assert refused.status_code == 401 and "deploy key" in refused.json()["message"], refused.text

    # An action href's header, minted by a batch call with an API token.
    minted = server.api("POST", f"{users}/tokens", {"name": "lfs", "scopes": ["read", "write"]})
    assert minted.status_code == 201, minted.text
    secret, token_id = minted.json()["token"], minted.json()["id"]
    upload = b'{"operation": "upload", "objects": [{"oid": "' + b"b" * 64 + b'", "size": 1}]}'
    answer = requests.post(base + "/objects/batch", data=upload, timeout=30,
                           headers={**LFS_HEADERS, "Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    action = answer.json()["objects"][0]["actions"]["verify"]
    verify = {"oid": "b" * 64, "size": 1}
    assert server.api("DELETE", f"{users}/tokens/{token_id}").status_code == 204
    refused = requests.post(action["href"], json=verify, timeout=30, headers={**LFS_HEADERS, **action["header"]})
    assert refused.status_code == 401 and "API token" in refused.json()["message"], refused.text
