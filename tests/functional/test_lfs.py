"""Git LFS with the real git-lfs client (Debian's git-lfs 3.3), on SQLite and PostgreSQL: push
and clone over HTTP and over the pure SSH protocol, locks, a corrupted upload refused, the read
rule, another tenant's object refused, and the limit and quota refusals."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.functional.conftest import GitServer, User
from tests.functional.lfs_support import (
    LFS_HEADERS,
    batch,
    leftover_uploads,
    lfs_base,
    lfs_home,
    lfs_worktree,
    oid,
    require_git_lfs,
    run,
    ssh_env,
    stored_objects,
    token_url,
)

MiB = 1024 * 1024
LIMIT = 2 * MiB
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lfs_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               git_env: dict[str, str]) -> Iterator[GitServer]:
    """A server whose LFS object limit (2 MiB) is small enough to test with."""
    require_git_lfs()
    root = tmp_path_factory.mktemp(f"lfs-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    srv = GitServer(root / "data", db_url, git_env, extra_env={"GITSERVER_LFS_MAX_OBJECT_BYTES": str(LIMIT)})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def env(tmp_path: Path, git_env: dict[str, str]) -> dict[str, str]:
    return lfs_home(tmp_path, git_env)


def setup(server: GitServer, visibility: str = "private") -> tuple[str, str, User]:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"}, visibility=visibility)
    return tenant, repo, user


def payload(n: int, seed: int) -> bytes:
    return os.urandom(16) + bytes([seed]) * (n - 16)


def test_push_over_ssh_objects_over_http_and_clone_over_http(lfs_server: GitServer, env: dict[str, str],
                                                             tmp_path: Path) -> None:
    tenant, repo, user = setup(lfs_server)
    data = payload(MiB + 5, 1)
    work = lfs_worktree(tmp_path / "work", env, {"big.bin": data})
    run(["git", "config", "lfs.url", token_url(lfs_server, user, f"/{tenant}/{repo}.git/info/lfs")], env, cwd=work)
    pushed = run(["git", "push", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env), cwd=work)
    assert oid(data) in stored_objects(lfs_server), pushed.stderr

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", token_url(lfs_server, user, f"/git/{tenant}/{repo}.git"), str(clone)], env)
    assert (clone / "big.bin").read_bytes() == data  # the content, not the pointer


def test_push_and_clone_over_the_pure_ssh_protocol(lfs_server: GitServer, env: dict[str, str],
                                                   tmp_path: Path) -> None:
    tenant, repo, user = setup(lfs_server)
    files = {"a.bin": payload(MiB + 7, 2), "b.bin": payload(300_000, 3)}
    work = lfs_worktree(tmp_path / "work", env, files)
    traced = {**ssh_env(lfs_server, user, env), "GIT_TRACE": "1"}
    pushed = run(["git", "push", lfs_server.repo_url(tenant, repo), "main"], traced, cwd=work)
    assert "git-lfs-transfer" in pushed.stderr and "git-lfs-authenticate" not in pushed.stderr, pushed.stderr
    assert {oid(d) for d in files.values()} <= stored_objects(lfs_server)

    clone = tmp_path / "clone"
    cloned = run(["git", "clone", lfs_server.repo_url(tenant, repo), str(clone)], traced)
    assert "git-lfs-transfer" in cloned.stderr and "git-lfs-authenticate" not in cloned.stderr
    for name, data in files.items():
        assert (clone / name).read_bytes() == data


def test_locks_with_the_client_over_ssh_and_the_http_api(lfs_server: GitServer, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    tenant, repo, owner = setup(lfs_server)
    other = lfs_server.new_user(tenant)
    with lfs_server.db() as session:
        from gitserver.admin import grants, repos, tenants, users

        t = tenants.get_tenant(session, tenant)
        grants.set_grant(session, repos.get_repo(session, t, repo), "write",
                         user=users.get_user(session, t, other.name))
    work = lfs_worktree(tmp_path / "work", env, {"doc.bin": payload(1000, 4)})
    owner_env = ssh_env(lfs_server, owner, env)
    run(["git", "remote", "add", "origin", lfs_server.repo_url(tenant, repo)], env, cwd=work)
    run(["git", "push", "-q", "origin", "main"], owner_env, cwd=work)

    locked = run(["git", "lfs", "lock", "doc.bin"], owner_env, cwd=work)
    assert "Locked doc.bin" in locked.stdout, locked
    listed = run(["git", "lfs", "locks"], owner_env, cwd=work)
    assert "doc.bin" in listed.stdout and owner.name in listed.stdout

    # The HTTP API, as locking.md has it, for the second user.
    base = lfs_base(lfs_server, tenant, repo)
    as_other = {**LFS_HEADERS, "Authorization": f"Bearer {other.token}"}
    dup = requests.post(base + "/locks", json={"path": "doc.bin"}, headers=as_other, timeout=10)
    assert dup.status_code == 409 and dup.json()["lock"]["path"] == "doc.bin"
    assert dup.json()["lock"]["owner"]["name"] == owner.name
    made = requests.post(base + "/locks", json={"path": "other.bin"}, headers=as_other, timeout=10)
    assert made.status_code == 201 and made.json()["lock"]["owner"]["name"] == other.name
    verify = requests.post(base + "/locks/verify", json={}, headers=as_other, timeout=10).json()
    assert [lk["path"] for lk in verify["ours"]] == ["other.bin"]
    assert [lk["path"] for lk in verify["theirs"]] == ["doc.bin"]
    lock_id = dup.json()["lock"]["id"]
    refused = requests.post(f"{base}/locks/{lock_id}/unlock", json={}, headers=as_other, timeout=10)
    assert refused.status_code == 403, refused.text
    forced = requests.post(f"{base}/locks/{lock_id}/unlock", json={"force": True}, headers=as_other, timeout=10)
    assert forced.status_code == 403 and "admin" in forced.json()["message"]  # a writer, not an admin
    listing = requests.get(base + "/locks", headers=as_other, timeout=10).json()
    assert sorted(lk["path"] for lk in listing["locks"]) == ["doc.bin", "other.bin"]

    unlocked = run(["git", "lfs", "unlock", "doc.bin"], owner_env, cwd=work)
    assert "Unlocked doc.bin" in unlocked.stdout, unlocked
    gone = requests.post(f"{base}/locks/{made.json()['lock']['id']}/unlock", json={}, headers=as_other, timeout=10)
    assert gone.status_code == 200 and gone.json()["lock"]["path"] == "other.bin"
    assert requests.get(base + "/locks", headers=as_other, timeout=10).json()["locks"] == []


def test_a_corrupted_upload_is_refused_and_nothing_kept(lfs_server: GitServer) -> None:
    tenant, repo, user = setup(lfs_server)
    data = payload(100_000, 5)
    answer = batch(lfs_server, tenant, repo, "upload", [(oid(data), len(data))], user.token)
    assert answer.status_code == 200, answer.text
    actions = answer.json()["objects"][0]["actions"]
    upload, verify = actions["upload"], actions["verify"]
    corrupted = data[:-1] + b"X"
    # One kept-alive connection for every request: the body is read from gunicorn's socket
    # directly (gitserver.api.rawbody), and the next request on it must still parse.
    http = requests.Session()
    put = http.put(upload["href"], data=corrupted, headers=upload["header"], timeout=30)
    assert put.status_code == 422 and "SHA-256" in put.json()["message"], put.text
    short = http.put(upload["href"], data=data[:-10], headers=upload["header"], timeout=30)
    assert short.status_code in (400, 422), short.text
    hung_up_mid_body(upload["href"], upload["header"], data)
    assert oid(data) not in stored_objects(lfs_server)
    assert leftover_uploads(lfs_server) == []
    checked = requests.post(verify["href"], json={"oid": oid(data), "size": len(data)},
                            headers={**LFS_HEADERS, **verify["header"]}, timeout=10)
    assert checked.status_code == 404
    fetch = batch(lfs_server, tenant, repo, "download", [(oid(data), len(data))], user.token).json()
    assert fetch["objects"][0]["error"]["code"] == 404
    # The right bytes are then accepted, on the same connection.
    assert http.put(upload["href"], data=data, headers=upload["header"], timeout=30).status_code == 200
    assert http.post(verify["href"], json={"oid": oid(data), "size": len(data)},
                     headers={**LFS_HEADERS, **verify["header"]}, timeout=10).status_code == 200
    assert oid(data) in stored_objects(lfs_server)


def hung_up_mid_body(href: str, header: dict[str, str], data: bytes) -> None:
    """A PUT whose client sends half the body and hangs up."""
    url = urlsplit(href)
    head = (f"PUT {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(data)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in header.items()) + "\r\n")
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + data[:len(data) // 2])
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the server closes its end: the upload is over


def test_the_read_rule(lfs_server: GitServer, env: dict[str, str], tmp_path: Path) -> None:
    tenant, private, user = setup(lfs_server)
    public = lfs_server.new_repo(tenant, grants={user.name: "write"}, visibility="public")
    data = payload(2000, 6)
    for repo in (private, public):
        work = lfs_worktree(tmp_path / repo, env, {"f.bin": data})
        run(["git", "push", "-q", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env), cwd=work)

    anonymous = batch(lfs_server, tenant, private, "download", [(oid(data), len(data))])
    assert anonymous.status_code == 401
    assert anonymous.headers["LFS-Authenticate"].startswith("Basic")
    stranger = lfs_server.new_user(lfs_server.new_tenant())
    hidden = batch(lfs_server, tenant, private, "download", [(oid(data), len(data))], stranger.token)
    assert hidden.status_code == 404
    reader_upload = batch(lfs_server, tenant, public, "upload", [(oid(b"x"), 1)], stranger.token)
    assert reader_upload.status_code == 403

    open_answer = batch(lfs_server, tenant, public, "download", [(oid(data), len(data))])
    assert open_answer.status_code == 200
    clone = tmp_path / "public-clone"
    run(["git", "clone", "-q", f"{lfs_server.http_url}/git/{tenant}/{public}.git", str(clone)], env)
    assert (clone / "f.bin").read_bytes() == data
    refused = run(["git", "clone", "-q", f"{lfs_server.http_url}/git/{tenant}/{private}.git",
                   str(tmp_path / "private-clone")], env, check=False)
    assert refused.returncode != 0


def test_another_tenants_object_is_refused_even_with_its_digest(lfs_server: GitServer, env: dict[str, str],
                                                                tmp_path: Path) -> None:
    tenant, repo, user = setup(lfs_server)
    data = payload(5000, 7)
    work = lfs_worktree(tmp_path / "work", env, {"secret.bin": data})
    run(["git", "push", "-q", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env), cwd=work)
    mine = batch(lfs_server, tenant, repo, "download", [(oid(data), len(data))], user.token).json()
    href = mine["objects"][0]["actions"]["download"]

    other_tenant, other_repo, thief = setup(lfs_server)
    asked = batch(lfs_server, other_tenant, other_repo, "download", [(oid(data), len(data))], thief.token).json()
    assert asked["objects"][0]["error"]["code"] == 404
    direct = requests.get(f"{lfs_base(lfs_server, other_tenant, other_repo)}/objects/{oid(data)}",
                          headers={"Authorization": f"Bearer {thief.token}"}, timeout=10)
    assert direct.status_code == 404
    # The owner's action header names its repository: it opens nothing elsewhere.
    replayed = requests.get(f"{lfs_base(lfs_server, other_tenant, other_repo)}/objects/{oid(data)}",
                            headers=href["header"], timeout=10)
    assert replayed.status_code in (401, 404)
    # Uploading the same digest without the bytes gets an upload action, not the object.
    claim = batch(lfs_server, other_tenant, other_repo, "upload", [(oid(data), len(data))], thief.token).json()
    assert "upload" in claim["objects"][0]["actions"]


def test_limit_and_quota_refusals(lfs_server: GitServer, env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user = setup(lfs_server)
    big = payload(LIMIT + 1, 8)
    answer = batch(lfs_server, tenant, repo, "upload", [(oid(big), len(big))], user.token).json()
    error = answer["objects"][0]["error"]
    assert error["code"] == 422 and "GITSERVER_LFS_MAX_OBJECT_BYTES is 2.0 MiB" in error["message"]

    work = lfs_worktree(tmp_path / "work", env, {"big.bin": big})
    pushed = run(["git", "push", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env),
                 cwd=work, check=False)
    assert pushed.returncode != 0 and "GITSERVER_LFS_MAX_OBJECT_BYTES" in pushed.stderr, pushed.stderr
    assert oid(big) not in stored_objects(lfs_server)

    with lfs_server.db() as session:
        from gitserver.admin import repos, tenants

        repos.get_repo(session, tenants.get_tenant(session, tenant), repo).quota_bytes = 600_000
    fits = payload(MiB, 9)
    over = batch(lfs_server, tenant, repo, "upload", [(oid(fits), len(fits))], user.token)
    assert over.status_code == 507 and "quota_bytes of repository" in over.json()["message"], over.text
    work2 = lfs_worktree(tmp_path / "work2", env, {"fits.bin": fits})
    pushed = run(["git", "push", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env),
                 cwd=work2, check=False)
    assert pushed.returncode != 0 and "quota_bytes of repository" in pushed.stderr, pushed.stderr


def test_git_lfs_authenticate(lfs_server: GitServer) -> None:
    tenant, repo, user = setup(lfs_server)
    result = lfs_server.ssh(user, "git-lfs-authenticate", f"/{tenant}/{repo}.git", "download")
    assert result.returncode == 0, result.stderr
    import json

    answer = json.loads(result.stdout)
    assert answer["href"] == lfs_base(lfs_server, tenant, repo)
    assert answer["header"]["Authorization"].startswith("RemoteAuth ") and answer["expires_in"] > 0
    ok = requests.post(answer["href"] + "/objects/batch", headers={**LFS_HEADERS, **answer["header"]},
                       json={"operation": "download", "objects": [{"oid": oid(b"a"), "size": 1}]}, timeout=10)
    assert ok.status_code == 200 and ok.json()["objects"][0]["error"]["code"] == 404
    upload = requests.post(answer["href"] + "/objects/batch", headers={**LFS_HEADERS, **answer["header"]},
                           json={"operation": "upload", "objects": [{"oid": oid(b"a"), "size": 1}]}, timeout=10)
    assert upload.status_code == 401  # a download header does not upload
    bad = lfs_server.ssh(user, "git-lfs-authenticate", f"{tenant}/{repo}", "delete")
    assert bad.returncode == 128 and bad.stderr.startswith("ERROR: the operation must be upload or download")
    stranger = lfs_server.new_user(lfs_server.new_tenant())
    hidden = lfs_server.ssh(stranger, "git-lfs-authenticate", f"{tenant}/{repo}", "download")
    assert hidden.returncode == 128 and "not found" in hidden.stderr


def test_check_reports_pointers_whose_objects_are_missing(lfs_server: GitServer, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    tenant, repo, user = setup(lfs_server)
    kept, skipped, lost = payload(3000, 10), payload(4000, 11), payload(5000, 12)
    work = lfs_worktree(tmp_path / "work", env, {"kept.bin": kept, "lost.bin": lost})
    run(["git", "push", "-q", lfs_server.repo_url(tenant, repo), "main"], ssh_env(lfs_server, user, env), cwd=work)
    (work / "skipped.bin").write_bytes(skipped)
    run(["git", "add", "-A"], env, cwd=work)
    run(["git", "commit", "-q", "-m", "pointer only"], env, cwd=work)
    # The client's hook is told not to upload: the pointer lands, the content never does.
    run(["git", "push", "-q", lfs_server.repo_url(tenant, repo), "main"],
        {**ssh_env(lfs_server, user, env), "GIT_LFS_SKIP_PUSH": "1"}, cwd=work)
    (lfs_server.data_dir / "lfs" / "objects" / oid(lost)[:2] / oid(lost)[2:4] / oid(lost)).unlink()

    result = lfs_server.cli("check", check=False)
    ours = sorted(line for line in result.stdout.splitlines() if line.startswith(f"{tenant}/{repo} "))
    assert ours == [
        f"{tenant}/{repo} lost.bin: LFS object {oid(lost)} is recorded but missing from the object store",
        f"{tenant}/{repo} skipped.bin: LFS object {oid(skipped)} ({len(skipped)} bytes) was never uploaded",
    ], result.stdout
    assert result.returncode == 1


def test_a_malformed_pkt_line_inside_a_command_ends_the_session_with_one_line(lfs_server: GitServer) -> None:
    """Through the real OpenSSH client: ``version 1`` and then not a pkt-line before its flush."""
    tenant, repo, user = setup(lfs_server)
    argv = [*lfs_server.ssh_command(user.key_path), "-p", str(lfs_server.ssh_port), "git@127.0.0.1",
            "git-lfs-transfer", f"{tenant}/{repo}", "upload"]
    sent = b"000eversion 1\nzzzz"
    result = subprocess.run(argv, env=lfs_server.git_env, input=sent, capture_output=True, timeout=60)
    assert result.returncode == 128, result.stderr
    assert b"status 500" not in result.stdout
    assert result.stderr.decode().startswith("ERROR: git-lfs-transfer: not a pkt-line length: b'zzzz'")
    logs = lfs_server.logs()
    assert "not a pkt-line length" in logs and "Traceback" not in logs
