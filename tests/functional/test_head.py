"""HEAD as users meet it: the first branch pushed becomes what clones check out, and the
repository API shows and changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.conftest import GitServer, User, commit_files, make_repo


@pytest.fixture
def admin_repo(server: GitServer) -> tuple[User, str, str]:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    return admin, tenant, server.new_repo(tenant)


def _api_path(tenant: str, repo: str) -> str:
    return f"/api/v1/tenants/{tenant}/repos/{repo}"


def test_first_branch_pushed_becomes_head(server: GitServer, tmp_path: Path,
                                          admin_repo: tuple[User, str, str]) -> None:
    admin, tenant, repo = admin_repo
    url = server.repo_url(tenant, repo)
    assert server.api("GET", _api_path(tenant, repo)).json()["default_branch"] == "main"
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(admin, "branch", "-m", "main", "master", cwd=work)
    server.git(admin, "push", url, "master", cwd=work)

    clone = server.git(admin, "clone", url, str(tmp_path / "clone"))
    assert "remote HEAD refers to nonexistent ref" not in clone.stderr
    assert server.git(admin, "symbolic-ref", "HEAD", cwd=tmp_path / "clone").stdout.strip() == \
        "refs/heads/master"
    assert server.api("GET", _api_path(tenant, repo)).json()["default_branch"] == "master"

    # Once HEAD exists, later pushes never move it.
    server.git(admin, "push", url, "master:main", cwd=work)
    assert server.api("GET", _api_path(tenant, repo)).json()["default_branch"] == "master"


def test_default_branch_is_set_through_the_api(server: GitServer, tmp_path: Path,
                                               admin_repo: tuple[User, str, str]) -> None:
    admin, tenant, repo = admin_repo
    url = server.repo_url(tenant, repo)
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(admin, "push", url, "main", cwd=work)
    commit_files(work, server.git_env, {"next.txt": "2\n"})
    server.git(admin, "push", url, "HEAD:refs/heads/next", cwd=work)

    missing = server.api("PATCH", _api_path(tenant, repo), json={"default_branch": "nope"})
    assert missing.status_code == 400
    assert f"there is no branch 'nope' in {tenant}/{repo}" in missing.json()["description"]
    bad = server.api("PATCH", _api_path(tenant, repo), json={"default_branch": "a..b"})
    assert bad.status_code == 400 and "default_branch" in bad.json()["description"]
    member = server.new_user(tenant)
    assert server.api("PATCH", _api_path(tenant, repo), json={"default_branch": "next"},
                      token=member.token).status_code == 404  # a private repo it cannot see

    ok = server.api("PATCH", _api_path(tenant, repo), json={"default_branch": "next"})
    assert ok.status_code == 200 and ok.json()["default_branch"] == "next"
    server.git(admin, "clone", url, str(tmp_path / "clone"))
    assert (tmp_path / "clone" / "next.txt").read_text() == "2\n"
