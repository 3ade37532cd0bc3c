"""A history with everything odd that real ones carry goes in and comes back out unchanged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import SERVER_REFS
from tests.functional import histories
from tests.functional.conftest import GitServer
from tests.functional.test_pipelines import pushed_pipeline_id, wait_pipeline

RESERVED = ("refs/tags/repour-", "refs/heads/branch-repour-")


def _refs(path: Path, env: dict[str, str]) -> dict[str, str]:
    out = histories.git(path, env, "for-each-ref", "--format=%(refname) %(objectname)")
    return {ref: oid for ref, oid in (line.split(" ", 1) for line in out.splitlines())
            if not ref.startswith(SERVER_REFS)}


def test_odd_history_round_trip(server: GitServer, tmp_path: Path) -> None:
    env = server.git_env
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    url = server.repo_url(tenant, server.new_repo(tenant))
    source = histories.odd_history(tmp_path / "source", env)

    pushed = server.git(user, "push", url, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*",
                        cwd=source)
    assert "badTimezone" in pushed.stderr  # let in, with a warning naming the object
    # Its archives are written by a worker; fsck must not race with those writes.
    wait_pipeline(server, pushed_pipeline_id(pushed.stderr))

    mirror = tmp_path / "mirror.git"
    server.git(user, "clone", "-q", "--mirror", url, str(mirror))
    expected, got = _refs(source, env), _refs(mirror, env)
    assert {ref: got.get(ref) for ref in expected} == expected
    assert all(ref.startswith(RESERVED) for ref in set(got) - set(expected))  # archives only

    # git fsck is clean but for the one commit whose time zone is known to be odd.
    odd = expected["refs/heads/odd-timezone"]
    for repo in (mirror, server.repo_path(tenant, url.rsplit("/", 1)[1].removesuffix(".git"))):
        check = subprocess.run(["git", "-c", "fsck.badTimezone=warn", "fsck", "--strict",
                                "--no-dangling"], cwd=repo, env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        assert [line for line in check.stderr.splitlines() if odd not in line] == []

    work = tmp_path / "work"
    server.git(user, "clone", "-q", url, str(work))
    assert os.readlink(work / "link-to-readme") == "README.md"
    assert (work / "caf\u00e9.txt").read_text() == "NFC name\n"
    assert (work / "cafe\u0301-nfd.txt").read_text() == "NFD name\n"
    assert (work / "\u65e5\u672c\u8a9e" / "\u30d5\u30a1\u30a4\u30eb.txt").is_file()
    assert histories.git(work, env, "ls-files", "-s", "vendor/lib").startswith("160000 ")
    assert histories.git(work, env, "cat-file", "-t", "v1-final") == "tag"
    assert histories.git(work, env, "cat-file", "-t", "v1-final^{}") == "commit"
    assert histories.git(work, env, "cat-file", "-t", "blob-tag^{}") == "blob"
    parents = histories.git(work, env, "rev-list", "--parents", "-n", "1", "main").split()
    assert len(parents) == 5  # the octopus merge: itself and four parents
