"""The pack cache as a build farm meets it: the real git client over OpenSSH and smart HTTP
against ``gitserver serve``, on SQLite and PostgreSQL, counted through /metrics."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import requests

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, make_repo

HITS = "gitserver_pack_cache_hits_total"
MISSES = "gitserver_pack_cache_misses_total"


def sample(server: GitServer, name: str) -> float:
    text = requests.get(server.http_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def archived_tag(server: GitServer, key: Path, url: str) -> str:
    def tag() -> str:
        out = server.git(key, "ls-remote", url, "refs/tags/repour-*").stdout
        return out.split()[1].removeprefix("refs/tags/") if out else ""

    return wait_for(tag, timeout=60, interval=0.3, what="the push's archive tag")


def test_builders_cloning_one_tag_share_one_pack_objects(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env, {"README.md": "hi\n", "blob.bin": os.urandom(300_000)})
    server.git(admin, "push", "-q", url, "main", cwd=work)
    tag = archived_tag(server, admin.key_path, url)
    hits, misses = sample(server, HITS), sample(server, MISSES)

    results: list[subprocess.CompletedProcess[str]] = []

    def builder(n: int) -> None:
        results.append(server.git(admin, "clone", "-q", "--depth", "1", "--branch", tag, url,
                                  str(tmp_path / f"b{n}"), check=False))

    threads = [threading.Thread(target=builder, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results if r.returncode]
    assert sample(server, MISSES) - misses == 1, "16 identical clones, one pack-objects"
    assert sample(server, HITS) - hits == 15
    for n in (0, 15):
        subprocess.run(["git", "fsck", "--no-progress"], cwd=tmp_path / f"b{n}", env=server.git_env, check=True,
                       capture_output=True)
        assert (tmp_path / f"b{n}" / "blob.bin").read_bytes() == (work / "blob.bin").read_bytes()

    # The same clone over smart HTTP is served by the same cache (the same request), anonymously
    # for this public repository.
    http = f"http://127.0.0.1:{server.http_port}/git/{tenant}/{repo}.git"
    before = sample(server, MISSES) + sample(server, HITS)
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", tag, http, str(tmp_path / "h")],
                   env=server.git_env, check=True, capture_output=True, timeout=120)
    assert (tmp_path / "h" / "blob.bin").read_bytes() == (work / "blob.bin").read_bytes()
    assert sample(server, MISSES) + sample(server, HITS) - before == 1
    assert sample(server, "gitserver_pack_cache_bytes") > 0


def test_a_private_repository_pack_is_never_served_to_another_repository(server: GitServer,
                                                                         tmp_path: Path) -> None:
    # The same content pushed to two tenants: the second clone is a miss, its own entry.
    packs = []
    for _ in range(2):
        tenant = server.new_tenant()
        admin = server.new_user(tenant, role="admin")
        repo = server.new_repo(tenant)
        url = server.repo_url(tenant, repo)
        work = make_repo(tmp_path / f"work-{tenant}", server.git_env, {"same.txt": "same\n"})
        server.git(admin, "push", "-q", url, "main", cwd=work)
        misses = sample(server, MISSES)
        server.git(admin, "clone", "-q", "--branch", "main", url, str(tmp_path / f"c-{tenant}"))
        packs.append(sample(server, MISSES) - misses)
    assert packs == [1, 1]
