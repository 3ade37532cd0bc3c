"""A refused push leaves nothing a reader could fetch (docs/architecture.md, "Which hook decides
what"): pushed to a reserved name, its objects are refused in quarantine, so the repository
never holds them and a protocol v2 fetch by id (which git's upload-pack serves for any object
the repository holds) finds nothing, over smart HTTP anonymously and over SSH as a reader. The
real SSH daemon, git and OpenSSH client, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import GitServer, User, commit_files, make_repo

SECRET = "TOPSECRET\n"
RESERVED = "this name is reserved for gitserver archives"


def server_has(srv: GitServer, tenant: str, repo: str, oid: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", oid], cwd=srv.repo_path(tenant, repo),
                          capture_output=True).returncode == 0


def blob_id(work: Path, path: str, git_env: dict[str, str]) -> str:
    return subprocess.run(["git", "rev-parse", f"HEAD:{path}"], cwd=work, env=git_env, capture_output=True,
                          text=True, check=True).stdout.strip()


def fetch_by_id(srv: GitServer, url: str, oid: str, tmp_path: Path, reader: User | None = None
                ) -> subprocess.CompletedProcess[str]:
    """A protocol v2 fetch of ``oid`` alone into an empty repository: anonymous over HTTP, or
    as ``reader`` over SSH."""
    target = tmp_path / f"fetch-{'ssh' if reader else 'http'}"
    subprocess.run(["git", "init", "-q", str(target)], env=srv.git_env, check=True)
    argv = ["-c", "protocol.version=2", "fetch", "--no-tags", url, oid]
    if reader is not None:
        return srv.git(reader, *argv, cwd=target, check=False, timeout=60)
    return subprocess.run(["git", *argv], cwd=target, env=srv.git_env, text=True, capture_output=True,
                          timeout=60)


def http_url(srv: GitServer, tenant: str, repo: str) -> str:
    return f"{srv.http_url}/git/{tenant}/{repo}.git"


@pytest.mark.parametrize("ref", ["refs/tags/repour-x", "refs/heads/branch-repour-x"])
def test_a_push_to_a_reserved_name_leaves_nothing_to_fetch(server: GitServer, tmp_path: Path, ref: str) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    reader = server.new_user(tenant)
    repo = server.new_repo(tenant, visibility="public", grants={reader.name: "read"})
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(admin, "push", "-q", url, "main", cwd=work)
    pushed = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=server.git_env, capture_output=True,
                            text=True, check=True).stdout.strip()
    # The way of fetching works: what was accepted is fetched by id, both ways.
    assert fetch_by_id(server, http_url(server, tenant, repo), pushed, tmp_path / "control").returncode == 0
    assert fetch_by_id(server, url, pushed, tmp_path / "control", reader=reader).returncode == 0
    commit = commit_files(work, server.git_env, {"secret.txt": SECRET}, "secret")
    blob = blob_id(work, "secret.txt", server.git_env)

    result = server.git(admin, "push", url, f"HEAD:{ref}", cwd=work, check=False)
    assert result.returncode != 0
    anonymous = fetch_by_id(server, http_url(server, tenant, repo), commit, tmp_path)
    assert anonymous.returncode != 0, "an anonymous v2 fetch got the refused commit"
    over_ssh = fetch_by_id(server, url, commit, tmp_path, reader=reader)
    assert over_ssh.returncode != 0, "a reader's v2 fetch over SSH got the refused commit"
    assert not server_has(server, tenant, repo, blob)
    assert not server_has(server, tenant, repo, commit)
    # The pusher reads the ref and the rule.
    assert f"remote: error: {ref}: {RESERVED}" in result.stderr
    assert "[remote rejected]" in result.stderr


def test_a_push_with_one_reserved_ref_is_refused_whole(server: GitServer, tmp_path: Path) -> None:
    """Atomic refusal: the allowed branch beside a reserved name is not updated either, and is
    named as such, so the secret reaches no ref and no object store."""
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env)
    commit = commit_files(work, server.git_env, {"secret.txt": SECRET}, "secret")

    result = server.git(admin, "push", url, "HEAD:refs/heads/feature", "HEAD:refs/tags/repour-y",
                        cwd=work, check=False)
    assert result.returncode != 0
    assert f"remote: error: refs/tags/repour-y: {RESERVED}" in result.stderr
    assert ("remote: error: refs/heads/feature: not updated: another ref of this push was refused, "
            "so nothing of it was stored") in result.stderr
    assert not server_has(server, tenant, repo, commit)
    refs = subprocess.run(["git", "for-each-ref"], cwd=server.repo_path(tenant, repo), capture_output=True,
                          text=True, check=True).stdout
    assert refs == ""
