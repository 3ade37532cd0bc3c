"""Who sees where a push came from (docs/limits.md): the push audit of a public repository is
readable by anyone, its client addresses only by the admins of the repository's tenant."""

from __future__ import annotations

from pathlib import Path

from tests.functional.conftest import GitServer, make_repo


def test_client_addresses_only_for_the_tenants_admins(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    outsider = server.new_user(server.new_tenant(), role="admin")
    repo = server.new_repo(tenant, visibility="public")
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(admin, "push", server.repo_url(tenant, repo), "main", cwd=work)
    url = f"/api/v1/tenants/{tenant}/repos/{repo}/pushes"

    def addresses(token: str | None) -> list[str | None]:
        resp = server.api("GET", url, token=token)
        assert resp.status_code == 200, resp.text
        return [p["client_address"] for p in resp.json()["items"]]

    assert addresses(None) == ["127.0.0.1"]  # the site admin
    assert addresses(admin.token) == ["127.0.0.1"]
    assert addresses(member.token) == [None]
    assert addresses(outsider.token) == [None]  # another tenant's admin reads a public repo
