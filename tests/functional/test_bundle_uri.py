"""Bundle URIs as a builder meets them: ``git clone --bundle-uri`` with the real git client
over OpenSSH and smart HTTP against ``gitserver serve``, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, commit_files, make_repo
from tests.functional.test_pack_cache import sample

DOWNLOADS = "gitserver_bundle_downloads_total"


def refs(clone: Path, env: dict[str, str]) -> list[str]:
    out = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)",
                          "refs/heads", "refs/tags", "refs/remotes"],
                         cwd=clone, env=env, check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def new_cached_packs(server: GitServer, before: set[Path]) -> list[int]:
    """Sizes of the packs the server's pack-objects wrote since ``before`` (the pack cache)."""
    return [p.stat().st_size for p in (server.data_dir / "cache" / "packs").glob("*.pack")
            if p not in before]


def cached(server: GitServer) -> set[Path]:
    return set((server.data_dir / "cache" / "packs").glob("*.pack"))


def test_clone_with_bundle_uri_fetches_only_the_rest(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env, {"big.bin": os.urandom(400_000)})
    server.git(admin, "push", "-q", url, "main", cwd=work)

    def bundle_url() -> str:
        return server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}", token=admin.token).json()["bundle_url"] or ""

    bundle = wait_for(bundle_url, timeout=60, interval=0.3, what="the first push's bundle")
    assert bundle == f"{server.http_url}/bundles/{tenant}/{repo}.bundle"
    # A second push: the bundle (written only when missing) now lacks it; the fetch brings it.
    commit_files(work, server.git_env, {"small.txt": "after the bundle\n"}, "second")
    server.git(admin, "push", "-q", url, "main", cwd=work)
    # The second push's archive tag lands asynchronously; both clones must see the same refs.
    wait_for(lambda: server.git(admin, "ls-remote", "--refs", url, "refs/tags/repour-*").stdout.count("\n") >= 2,
             timeout=60, interval=0.3, what="the second push's archive tag")
    with_token = bundle.replace("http://", f"http://x:{admin.token}@")
    downloads = sample(server, DOWNLOADS)

    plain = tmp_path / "plain"
    before = cached(server)
    server.git(admin, "clone", "-q", url, str(plain))
    [plain_pack] = new_cached_packs(server, before)

    over_ssh = tmp_path / "ssh"
    before = cached(server)
    server.git(admin, "clone", "-q", f"--bundle-uri={with_token}", url, str(over_ssh))
    [rest] = new_cached_packs(server, before)
    assert refs(over_ssh, server.git_env) == refs(plain, server.git_env)
    assert (over_ssh / "small.txt").read_text() == "after the bundle\n"
    assert plain_pack > 400_000 and rest < 10_000, (plain_pack, rest)
    assert "refs/bundles/main" in subprocess.run(["git", "for-each-ref"], cwd=over_ssh, text=True,
                                                 capture_output=True, env=server.git_env).stdout

    over_http = tmp_path / "http"
    http = f"http://x:{admin.token}@127.0.0.1:{server.http_port}/git/{tenant}/{repo}.git"
    subprocess.run(["git", "clone", "-q", f"--bundle-uri={with_token}", http, str(over_http)],
                   env=server.git_env, check=True, capture_output=True, timeout=120)
    assert refs(over_http, server.git_env) == refs(plain, server.git_env)
    assert sample(server, DOWNLOADS) - downloads == 2
    subprocess.run(["git", "fsck", "--no-progress"], cwd=over_http, env=server.git_env, check=True,
                   capture_output=True)


def test_a_private_bundle_needs_the_repository_read_rule(server: GitServer, tmp_path: Path) -> None:
    tenant, other = server.new_tenant(), server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    stranger = server.new_user(other, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(admin, "push", "-q", server.repo_url(tenant, repo), "main", cwd=work)
    path = f"/bundles/{tenant}/{repo}.bundle"
    wait_for(lambda: server.api("GET", path, token=admin.token).status_code == 200, timeout=60,
             interval=0.3, what="the first push's bundle")
    ok = requests.get(server.http_url + path, auth=("x", admin.token), timeout=30)
    assert ok.status_code == 200 and ok.content.startswith(b"# v2 git bundle\n")
    assert ok.headers["Content-Length"] == str(len(ok.content))

    anonymous = requests.get(server.http_url + path, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    hidden = requests.get(server.http_url + path, auth=("x", stranger.token), timeout=30)
    missing = requests.get(server.http_url + f"/bundles/{tenant}/nosuch.bundle", auth=("x", stranger.token),
                           timeout=30)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace(repo, "nosuch") == missing.text
    assert server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}", token=stranger.token).status_code == 404
    # And git itself: the bundle is refused, the clone still works (the whole pack over SSH).
    clone = server.git(admin, "clone", "-q", f"--bundle-uri={server.http_url}{path}",
                       server.repo_url(tenant, repo), str(tmp_path / "c"))
    assert "failed to fetch objects from bundle URI" in clone.stderr
    assert (tmp_path / "c" / "README.md").is_file()


def test_a_repository_without_commits_has_no_bundle(server: GitServer) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    assert server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}", token=admin.token).json()["bundle_url"] is None
    answer = requests.get(f"{server.http_url}/bundles/{tenant}/{repo}.bundle", timeout=30)
    assert answer.status_code == 404 and "no bundle yet" in answer.text
    assert requests.get(f"{server.http_url}/bundles/{tenant}/..%2Fx.bundle", timeout=30).status_code in (400, 404)
