"""Refused names as a pusher reads them: non-ASCII names, and a GitHub clone pushed with
--mirror (its pull-request refs, then the deletion of the server's archive refs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.functional.conftest import GitServer, make_repo
from tests.functional.test_pipelines import pushed_pipeline_id, wait_pipeline

MIRROR_HINT = "'git push --mirror' copies and deletes every ref; push with 'git push --all && git push --tags' instead"


def test_non_ascii_ref_name_is_refused_with_the_reason(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    url = server.repo_url(tenant, server.new_repo(tenant))
    work = make_repo(tmp_path / "work", server.git_env)
    result = server.git(user, "push", url, "main:refs/heads/café", cwd=work, check=False)
    assert result.returncode != 0
    assert ("(invalid ref name: ref names must be ASCII; this one contains 'é' (U+00E9), which "
            "macOS, Windows and Linux clients would store differently)") in result.stderr


def test_mirror_push_of_a_github_clone_gets_a_hint(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    url = server.repo_url(tenant, server.new_repo(tenant))
    work = make_repo(tmp_path / "work", server.git_env)
    env = server.git_env
    for ref in ("refs/pull/1/head", "refs/remotes/origin/main"):
        subprocess.run(["git", "update-ref", ref, "HEAD"], cwd=work, env=env, check=True)

    first = server.git(user, "push", "--mirror", url, cwd=work, check=False)
    assert " * [new branch]      main -> main" in first.stderr
    assert (f"! [remote rejected] refs/pull/1/head -> refs/pull/1/head (only branches (refs/heads/) "
            f"and tags (refs/tags/) may be pushed: {MIRROR_HINT})") in first.stderr
    wait_pipeline(server, pushed_pipeline_id(first.stderr))  # the archive refs now exist

    second = server.git(user, "push", "--mirror", url, cwd=work, check=False)
    assert second.returncode != 0
    assert f"(this name is reserved for gitserver archives: {MIRROR_HINT})" in second.stderr
    assert "[deleted]" not in second.stderr

    # What the hint says works, and is repeatable.
    for _ in range(2):
        server.git(user, "push", "--all", url, cwd=work)
        server.git(user, "push", "--tags", url, cwd=work)
