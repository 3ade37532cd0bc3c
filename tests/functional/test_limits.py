"""Push limits through the real SSH daemon, git and OpenSSH client (docs/limits.md): a push over
GITSERVER_MAX_BLOB_BYTES, GITSERVER_MAX_PUSH_BYTES or a repository's or tenant's quota_bytes is
refused with a message naming the limit and the size, stores nothing, and is counted in
``gitserver_pushes_over_limit_total``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.functional.conftest import GitServer, User, commit_files, make_repo
from tests.functional.test_refused_objects import fetch_by_id

KiB = 1024
MiB = 1024 * KiB
LIMIT_ENV = {"GITSERVER_MAX_BLOB_BYTES": str(1 * MiB), "GITSERVER_MAX_PUSH_BYTES": str(3 * MiB)}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            git_env: dict[str, str]) -> Iterator[GitServer]:
    """A server whose blob and push limits are small enough to test with a few MiB."""
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    srv = GitServer(root / "data", db_url, git_env, extra_env=LIMIT_ENV)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def over_limit_count(srv: GitServer, limit: str) -> float:
    text = requests.get(srv.http_url + "/metrics", timeout=10).text
    prefix = f'gitserver_pushes_over_limit_total{{limit="{limit}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def server_has(srv: GitServer, tenant: str, repo: str, oid: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", oid], cwd=srv.repo_path(tenant, repo),
                          capture_output=True).returncode == 0


def blob_id(path: Path, git_env: dict[str, str]) -> str:
    return subprocess.run(["git", "hash-object", str(path)], env=git_env, capture_output=True, text=True,
                          check=True).stdout.strip()


def setup_repo(srv: GitServer, tmp_path: Path, role: str = "admin") -> tuple[str, str, User, Path]:
    tenant = srv.new_tenant()
    user = srv.new_user(tenant, role=role)
    repo = srv.new_repo(tenant, grants={user.name: "admin"})
    work = make_repo(tmp_path / "work", srv.git_env)
    srv.git(user, "push", srv.repo_url(tenant, repo), "main", cwd=work)
    return tenant, repo, user, work


def test_a_commit_refused_for_its_blob_cannot_be_fetched_by_id(limited: GitServer, tmp_path: Path) -> None:
    """The limits are decided in quarantine: nothing of the refused push reaches the public
    repository, so a v2 fetch by the commit's id fails anonymously over HTTP and for a reader
    over SSH (docs/limits.md)."""
    tenant = limited.new_tenant()
    admin = limited.new_user(tenant, role="admin")
    reader = limited.new_user(tenant)
    repo = limited.new_repo(tenant, visibility="public", grants={reader.name: "read"})
    url = limited.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", limited.git_env)
    limited.git(admin, "push", "-q", url, "main", cwd=work)
    commit = commit_files(work, limited.git_env, {"big.bin": b"TOPSECRET" + os.urandom(MiB)})
    result = limited.git(admin, "push", url, "main", cwd=work, check=False)
    assert result.returncode != 0 and "GITSERVER_MAX_BLOB_BYTES" in result.stderr
    assert not server_has(limited, tenant, repo, commit)
    http = f"{limited.http_url}/git/{tenant}/{repo}.git"
    assert fetch_by_id(limited, http, commit, tmp_path).returncode != 0
    assert fetch_by_id(limited, url, commit, tmp_path, reader=reader).returncode != 0


def test_a_blob_over_the_limit_is_refused_and_not_stored(limited: GitServer, tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(limited, tmp_path)
    before = over_limit_count(limited, "max_blob_bytes")
    commit_files(work, limited.git_env, {"big.bin": os.urandom(MiB + 1)})
    oid = blob_id(work / "big.bin", limited.git_env)
    result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
    assert result.returncode != 0
    # The file's path, as the pusher knows it (the blob id for whoever looks it up).
    assert (f"push refused: GITSERVER_MAX_BLOB_BYTES: file big.bin is 1.0 MiB, over the 1 MiB limit "
            f"(blob {oid})") in result.stderr
    assert "[remote rejected] main" in result.stderr
    assert not server_has(limited, tenant, repo, oid)
    assert over_limit_count(limited, "max_blob_bytes") == before + 1
    # Just under the limit is fine.
    subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=work, env=limited.git_env, check=True)
    commit_files(work, limited.git_env, {"ok.bin": os.urandom(MiB)})
    limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work)


def test_a_push_over_the_pack_limit_is_cut_off(limited: GitServer, tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(limited, tmp_path)
    before = over_limit_count(limited, "max_push_bytes")
    # Four blobs under the blob limit, together over the 3 MiB push limit (random: no compression).
    commit_files(work, limited.git_env, {f"part{i}.bin": os.urandom(900 * KiB) for i in range(4)})
    oid = blob_id(work / "part0.bin", limited.git_env)
    result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert "pack exceeds maximum allowed size" in result.stderr
    assert ("push refused: GITSERVER_MAX_PUSH_BYTES is 3.0 MiB (3145728 bytes); the pack is larger; "
            "nothing was stored") in result.stderr
    assert not server_has(limited, tenant, repo, oid)
    assert not list((limited.repo_path(tenant, repo) / "objects").glob("incoming-*"))
    assert over_limit_count(limited, "max_push_bytes") == before + 1


def test_repository_quota(limited: GitServer, tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(limited, tmp_path, role="admin")
    path = f"/api/v1/tenants/{tenant}/repos/{repo}"
    size = limited.api("GET", path, token=user.token).json()["size_bytes"]
    assert size > 0
    # A repository admin who is not a tenant admin cannot raise its own quota.
    member = limited.new_user(tenant)
    with limited.db() as session:
        from gitserver.admin import grants, repos, tenants, users

        t = tenants.get_tenant(session, tenant)
        grants.set_grant(session, repos.get_repo(session, t, repo), "admin",
                         user=users.get_user(session, t, member.name))
    refused = limited.api("PATCH", path, json={"quota_bytes": 10**12}, token=member.token)
    assert refused.status_code == 403, refused.text
    assert "quota_bytes" in refused.json()["description"]
    bad = limited.api("PATCH", path, json={"quota_bytes": -5}, token=user.token)
    assert bad.status_code == 400 and "quota_bytes" in bad.json()["description"]

    resp = limited.api("PATCH", path, json={"quota_bytes": size + 200 * KiB}, token=user.token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["quota_bytes"] == size + 200 * KiB
    before = over_limit_count(limited, "repo_quota_bytes")
    commit_files(work, limited.git_env, {"data.bin": os.urandom(300 * KiB)})
    oid = blob_id(work / "data.bin", limited.git_env)
    result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert (f"push refused: the quota_bytes of repository {tenant}/{repo} is "
            f"{(size + 200 * KiB) / KiB:.1f} KiB ({size + 200 * KiB} bytes); it would grow from") in result.stderr
    assert not server_has(limited, tenant, repo, oid)
    # (The first push's archive step may have added a few hundred bytes meanwhile.)
    assert limited.api("GET", path, token=user.token).json()["size_bytes"] < size + 50 * KiB
    assert over_limit_count(limited, "repo_quota_bytes") == before + 1

    assert limited.api("PATCH", path, json={"quota_bytes": None}, token=user.token).json()["quota_bytes"] is None
    limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work)
    assert limited.api("GET", path, token=user.token).json()["size_bytes"] > size + 300 * KiB


def test_tenant_quota(limited: GitServer, tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(limited, tmp_path, role="admin")
    path = f"/api/v1/tenants/{tenant}"
    # A tenant admin cannot set its own tenant's quota; a site admin can.
    refused = limited.api("PATCH", path, json={"quota_bytes": 10**12}, token=user.token)
    assert refused.status_code == 403, refused.text
    size = limited.api("GET", path, token=user.token).json()["size_bytes"]
    resp = limited.api("PATCH", path, json={"quota_bytes": size + 400 * KiB})
    assert resp.status_code == 200, resp.text
    assert resp.json()["quota_bytes"] == size + 400 * KiB

    # A second repository of the tenant: each push fits alone, the tenant's total does not.
    other = limited.new_repo(tenant, grants={user.name: "write"})
    commit_files(work, limited.git_env, {"a.bin": os.urandom(250 * KiB)})
    limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work)
    before = over_limit_count(limited, "tenant_quota_bytes")
    commit_files(work, limited.git_env, {"b.bin": os.urandom(250 * KiB)})
    oid = blob_id(work / "b.bin", limited.git_env)
    result = limited.git(user, "push", limited.repo_url(tenant, other), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert f"push refused: the quota_bytes of tenant {tenant} is " in result.stderr
    assert "its repositories would grow from" in result.stderr
    assert not server_has(limited, tenant, other, oid)
    assert over_limit_count(limited, "tenant_quota_bytes") == before + 1


def test_repour_clone_of_an_origin_over_the_limit_stores_nothing(limited: GitServer, tmp_path: Path) -> None:
    """The server's own pushes (Repour /clone of a caller's origin) are held to the same limits."""
    tenant, repo, user, _work = setup_repo(limited, tmp_path)
    origin = make_repo(tmp_path / "origin", limited.git_env, {"big.bin": os.urandom(MiB + 1)})
    oid = blob_id(origin / "big.bin", limited.git_env)
    before = over_limit_count(limited, "max_blob_bytes")
    resp = limited.api("POST", "/clone", json={
        "type": "git", "originRepoUrl": f"file://{origin}", "ref": "main",
        "targetRepoUrl": f"{limited.ssh_base}/{tenant}/{repo}.git"}, token=user.token)
    assert resp.status_code == 400, resp.text
    assert "push refused: GITSERVER_MAX_BLOB_BYTES: file big.bin is 1.0 MiB, over the 1 MiB limit" \
        in resp.json()["stderr"]
    assert not server_has(limited, tenant, repo, oid)
    assert over_limit_count(limited, "max_blob_bytes") == before + 1


def _hold_a_push(srv: GitServer, user: User, tenant: str, repo: str, work: Path,
                 ref: str, sent_fraction: float = 0.9) -> tuple[subprocess.Popen[bytes], Path]:
    """A real push that has sent most of its pack and waits: its ref command and the start of
    the pack go to git-receive-pack over the real OpenSSH client, and stdin stays open. The
    server's receive-pack has made its quarantine and is writing the pack into it."""
    env = srv.git_env
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=work, env=env,
                          input=f"{head}\n".encode(), capture_output=True, check=True).stdout
    command = f"{'0' * 40} {head} {ref}\0report-status\n".encode()
    packet = f"{len(command) + 4:04x}".encode() + command + b"0000"
    argv = [*srv.ssh_command(user.key_path), "-p", str(srv.ssh_port), "git@127.0.0.1",
            f"git-receive-pack '{tenant}/{repo}.git'"]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    # The server speaks first (its refs); read them so that it reads our command next.
    while (length := proc.stdout.read(4)) not in (b"0000", b""):
        proc.stdout.read(int(length, 16) - 4)
    proc.stdin.write(packet + pack[:int(len(pack) * sent_fraction)])
    proc.stdin.flush()
    objects = srv.repo_path(tenant, repo) / "objects"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the pack's start is in the quarantine
        held = [q for q in objects.glob("tmp_objdir-incoming-*")
                if sum(f.stat().st_size for f in q.rglob("*") if f.is_file()) >= len(pack) // 2]
        if held:
            return proc, held[0]
        time.sleep(0.05)
    proc.kill()
    listing = sorted(f"{p.relative_to(objects)} {p.stat().st_size}" for p in objects.rglob("*"))
    raise AssertionError(f"the held push's quarantine never filled ({len(pack)} bytes sent): {listing}, "
                         f"client stderr: {proc.communicate()[1]!r}")


def test_a_push_in_progress_counts_against_the_quota(limited: GitServer, tmp_path: Path) -> None:
    """Two pushes at once cannot both pass a quota that only one of them fits: the second is
    refused while the first is still receiving, and passes once the first is gone."""
    tenant, repo, user, work = setup_repo(limited, tmp_path, role="admin")
    path = f"/api/v1/tenants/{tenant}/repos/{repo}"
    size = limited.api("GET", path, token=user.token).json()["size_bytes"]
    assert limited.api("PATCH", path, json={"quota_bytes": size + 250 * KiB},
                       token=user.token).status_code == 200
    # Over receive.unpackLimit (100 objects), so git writes the pack into the quarantine as it
    # arrives (index-pack) instead of holding it in memory until the end (unpack-objects).
    files = {f"small/{i}.txt": f"{i}\n" for i in range(120)}
    other = make_repo(tmp_path / "other", limited.git_env, {**files, "first.bin": os.urandom(150 * KiB)})
    held, quarantine = _hold_a_push(limited, user, tenant, repo, other, "refs/heads/first")
    try:
        commit_files(work, limited.git_env, {"second.bin": os.urandom(150 * KiB)})
        result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
        assert result.returncode != 0
        assert (f"push refused: the quota_bytes of repository {tenant}/{repo} is "
                in result.stderr), result.stderr
        assert "of other pushes in progress" in result.stderr
    finally:
        held.kill()  # the first push's client goes: receive-pack gets EOF, its pack is incomplete
        held.wait(30)
    deadline = time.monotonic() + 30
    while quarantine.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not quarantine.exists()
    limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work)
    heads = limited.git(user, "ls-remote", limited.repo_url(tenant, repo)).stdout
    assert "refs/heads/main" in heads and "refs/heads/first" not in heads


def _add_log(srv: GitServer, tenant: str, repo: str, size: int, pruned: bool = False) -> int:
    """A finished pipeline of the repository with ``size`` bytes of log, as a build leaves it."""
    from gitserver.admin import repos, tenants
    from gitserver.db import models
    from gitserver.db.base import utcnow

    with srv.db() as session:
        row = repos.get_repo(session, tenants.get_tenant(session, tenant), repo)
        pipeline = models.Pipeline(repo_id=row.id, status=models.SUCCEEDED, finished_at=utcnow(),
                                   log_pruned_at=utcnow() if pruned else None)
        session.add(pipeline)
        session.flush()
        if size:
            session.add(models.LogChunk(pipeline_id=pipeline.id, offset=0, data=b"l" * size))
        return pipeline.id


def test_pipeline_logs_count_in_the_repository_and_tenant_quotas(limited: GitServer, tmp_path: Path) -> None:
    """Logs are stored in the database, not under the repository: they count all the same, in
    size_bytes and in the push check (issue 21, finding 6)."""
    tenant, repo, user, work = setup_repo(limited, tmp_path, role="admin")
    path = f"/api/v1/tenants/{tenant}/repos/{repo}"
    size = limited.api("GET", path, token=user.token).json()["size_bytes"]
    tenant_size = limited.api("GET", f"/api/v1/tenants/{tenant}").json()["size_bytes"]
    _add_log(limited, tenant, repo, 300 * KiB)
    assert limited.api("GET", path, token=user.token).json()["size_bytes"] >= size + 300 * KiB
    assert limited.api("GET", f"/api/v1/tenants/{tenant}").json()["size_bytes"] >= tenant_size + 300 * KiB

    # Room for a small push on disk, none once the logs are counted.
    assert limited.api("PATCH", path, json={"quota_bytes": size + 200 * KiB}, token=user.token).status_code == 200
    commit_files(work, limited.git_env, {"small.txt": "a few bytes\n"})
    result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert f"push refused: the quota_bytes of repository {tenant}/{repo} is " in result.stderr
    assert limited.api("PATCH", path, json={"quota_bytes": None}, token=user.token).status_code == 200

    assert limited.api("PATCH", f"/api/v1/tenants/{tenant}",
                       json={"quota_bytes": tenant_size + 200 * KiB}).status_code == 200
    result = limited.git(user, "push", limited.repo_url(tenant, repo), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert f"push refused: the quota_bytes of tenant {tenant} is " in result.stderr


def test_a_pruned_log_answers_410_naming_the_setting(limited: GitServer, tmp_path: Path) -> None:
    tenant, repo, user, _work = setup_repo(limited, tmp_path, role="admin")
    pid = _add_log(limited, tenant, repo, 0, pruned=True)
    resp = limited.api("GET", f"/api/v1/pipelines/{pid}/log", token=user.token)
    assert resp.status_code == 410, resp.text
    assert resp.json()["title"] == "Gone"
    assert "pipeline_log_retention_days" in resp.json()["description"]
    assert limited.api("GET", f"/api/v1/pipelines/{pid}", token=user.token).status_code == 200
