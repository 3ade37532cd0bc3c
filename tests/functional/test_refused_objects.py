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


def fetch_by_id(srv: GitServer, url: str, oid: str, tmp_path: Path, reader: User | None = None,
                version: int = 2) -> subprocess.CompletedProcess[str]:
    """A fetch of ``oid`` alone into an empty repository (protocol ``version``): anonymous over
    HTTP, or as ``reader`` over SSH."""
    target = tmp_path / f"fetch-v{version}-{'ssh' if reader else 'http'}"
    subprocess.run(["git", "init", "-q", str(target)], env=srv.git_env, check=True)
    argv = ["-c", f"protocol.version={version}", "fetch", "--no-tags", url, oid]
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


def test_protocol_v0_fetches_by_id_only_what_a_ref_reaches(server: GitServer, tmp_path: Path) -> None:
    """uploadpack.allowAnySHA1InWant is off on both fronts: a v0 request may name a commit a
    ref reaches (partial clones and builders need that), not one no ref reaches (here: the
    commit of a refused non-fast-forward push, which proc-receive refused after git had moved
    its objects into the repository)."""
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    reader = server.new_user(tenant)
    repo = server.new_repo(tenant, visibility="public", grants={reader.name: "read"})
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env)
    reachable = commit_files(work, server.git_env, {"a.txt": "a\n"}, "a")
    commit_files(work, server.git_env, {"b.txt": "b\n"}, "b")
    server.git(admin, "push", "-q", url, "main", cwd=work)
    subprocess.run(["git", "commit", "-q", "--amend", "-m", "rewritten"], cwd=work, env=server.git_env, check=True)
    rewritten = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=server.git_env, capture_output=True,
                               text=True, check=True).stdout.strip()
    refused = server.git(admin, "push", "--force", url, "main", cwd=work, check=False)
    assert "(non-fast-forward pushes are not allowed)" in refused.stderr
    assert server_has(server, tenant, repo, rewritten)  # left behind by proc-receive's refusal

    http = http_url(server, tenant, repo)
    for reader_or_anonymous in (None, reader):
        assert fetch_by_id(server, http if reader_or_anonymous is None else url, reachable, tmp_path / "reachable",
                           reader=reader_or_anonymous, version=0).returncode == 0
        unreachable = fetch_by_id(server, http if reader_or_anonymous is None else url, rewritten,
                                  tmp_path / "unreachable", reader=reader_or_anonymous, version=0)
        assert unreachable.returncode != 0, f"a v0 fetch {'over SSH' if reader_or_anonymous else 'over HTTP'} got it"
