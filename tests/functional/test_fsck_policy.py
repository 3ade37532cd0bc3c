"""fsck policy as a pusher and a Repour client see it: cosmetic oddities of real histories
are let in with a warning, the security-relevant findings still refuse the push or the clone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.functional import histories
from tests.functional.conftest import GitServer, User, make_repo


@pytest.fixture
def writer(server: GitServer) -> tuple[User, str]:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    return user, server.repo_url(tenant, repo)


def _work(tmp_path: Path, git_env: Mapping[str, str]) -> Path:
    return make_repo(tmp_path / "work", git_env)


def test_bad_timezone_commit_is_accepted_with_a_warning(server: GitServer, tmp_path: Path,
                                                        writer: tuple[User, str]) -> None:
    user, url = writer
    work = _work(tmp_path, server.git_env)
    odd = histories.bad_timezone_commit(work, server.git_env,
                                        parent=histories.git(work, server.git_env, "rev-parse", "HEAD"))
    result = server.git(user, "push", url, f"{odd}:refs/heads/main", cwd=work)
    assert f"warning: object {odd}: badTimezone" in result.stderr
    assert server.git(user, "ls-remote", url, "refs/heads/main", cwd=work).stdout.split()[0] == odd


@pytest.mark.parametrize(("make", "finding"), [
    (histories.dotgit_commit, "hasDotgit"),
    (histories.bad_gitmodules_commit, "gitmodulesUrl"),
])
def test_security_findings_are_still_refused(server: GitServer, tmp_path: Path, writer: tuple[User, str],
                                             make: Callable[[Path, Mapping[str, str]], str],
                                             finding: str) -> None:
    user, url = writer
    work = _work(tmp_path, server.git_env)
    bad = make(work, server.git_env)
    result = server.git(user, "push", url, f"{bad}:refs/heads/evil", cwd=work, check=False)
    assert result.returncode != 0
    assert f"{finding}" in result.stderr
    assert "-> evil (unpacker error)" in result.stderr
    assert server.git(user, "ls-remote", url, cwd=work).stdout == ""




@pytest.mark.parametrize(("make", "status"), [
    (histories.bad_timezone_commit, 200),
    (histories.dotgit_commit, 400),
])
def test_repour_clone_follows_the_same_rules(server: GitServer, tmp_path: Path,
                                             make: Callable[[Path, Mapping[str, str]], str],
                                             status: int) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    origin = _work(tmp_path, server.git_env)
    histories.git(origin, server.git_env, "update-ref", "refs/heads/main", make(origin, server.git_env))
    resp = server.api("POST", "/clone", token=admin.token, json={
        "type": "git", "originRepoUrl": f"file://{origin}",
        "targetRepoUrl": server.repo_url(tenant, repo), "ref": "main"})
    assert resp.status_code == status, resp.text
    refs = histories.git(origin, server.git_env, "ls-remote", str(server.repo_path(tenant, repo)))
    if status == 200:
        assert f"{histories.git(origin, server.git_env, 'rev-parse', 'main')}\trefs/heads/main" in refs
    else:
        assert "hasDotgit" in resp.text
        assert refs == ""
