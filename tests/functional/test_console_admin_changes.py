"""The console's change forms for admins, in Debian's Chromium and over plain HTTP, against the
real ``gitserver serve`` on SQLite and PostgreSQL: an admin changes a user's role and disables
it, adds and removes a group's member and removes a deploy key, each seen through the API; a
refusal is answered beside its field (nothing written); a non-admin gets 403, another tenant's
admin 404, a tenant admin 403 on a site admin; axe-core checks the changed pages where it is
installed. Skipped, with the reason, only where Chromium or Playwright is missing."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import select

from gitserver.db import models
from tests.functional.conftest import GitServer
from tests.functional.console_helpers import AXE, Tab, axe_violations, browser, csrf_token, login_url, signed_in

__all__ = ["browser"]


def _axe(tab: Tab) -> None:
    if AXE.is_file():
        assert axe_violations(tab.page) == [], tab.page.url


def _add_deploy_key(server: GitServer, tenant: str, repo: str) -> int:
    _key_path, public = server.new_key("deploy")
    made = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/deploy-keys", {"key": public, "title": "ci"})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def test_an_admin_changes_a_user_group_members_and_deploy_keys(server: GitServer, browser: Any) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    dora = server.new_user(tenant)
    repo = server.new_repo(tenant)
    deploy_id = _add_deploy_key(server, tenant, repo)
    assert server.api("POST", f"/api/v1/tenants/{tenant}/groups", {"name": "ops"}).status_code == 201
    tab = Tab(browser, bypass_csp=True)  # only so axe's script can be injected
    tab.goto(login_url(server, admin))
    api_user = f"/api/v1/tenants/{tenant}/users/{dora.name}"

    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}/users/{dora.name}")
    assert tab.page.input_value("#change-user-role") == "member"
    tab.page.select_option("#change-user-role", "admin")
    tab.page.select_option("#change-user-state", "disabled")
    tab.page.click("text=Save changes")
    tab.page.wait_for_selector("text=Disabled: its keys and tokens do not work.")
    _axe(tab)
    seen = server.api("GET", api_user).json()
    assert (seen["role"], seen["disabled"]) == ("admin", True)
    assert server.api("GET", api_user, token=dora.token).status_code == 401  # its token stopped working
    tab.page.select_option("#change-user-state", "active")
    tab.page.click("text=Save changes")
    tab.page.wait_for_selector("text=Active.")
    assert server.api("GET", api_user).json()["disabled"] is False

    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}")
    tab.page.click("main >> text=ops")
    tab.page.wait_for_url(f"**/ui/-/admin/{tenant}/groups/ops")
    tab.page.fill("#add-member-user", dora.name)
    tab.page.click("text=Add member")
    tab.page.wait_for_selector(f"text=Remove {dora.name} from ops")
    _axe(tab)
    members = f"/api/v1/tenants/{tenant}/groups/ops/members"
    assert [u["name"] for u in server.api("GET", members).json()["items"]] == [dora.name]
    tab.page.fill("#add-member-user", "nobody")
    tab.page.click("text=Add member")
    tab.page.wait_for_selector("#add-member-user-error")
    assert "not found" in tab.page.inner_text("#add-member-user-error")
    assert tab.page.get_attribute("#add-member-user", "aria-invalid") == "true"
    _axe(tab)
    tab.page.click(f"text=Remove {dora.name} from ops")
    tab.page.wait_for_selector("text=No members.")
    assert server.api("GET", members).json()["items"] == []

    tab.goto(f"{server.http_url}/ui/{tenant}/{repo}/access")
    _axe(tab)
    tab.page.click(f"text=Remove deploy key {deploy_id}")
    tab.page.wait_for_selector("text=No deploy keys.")
    deploy = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/deploy-keys/{deploy_id}")
    assert deploy.status_code == 404, deploy.text
    assert not tab.errors, tab.errors
    tab.close()


def _post(http: requests.Session, page_url: str, action: str, **data: str) -> requests.Response:
    token = csrf_token(http.get(page_url, timeout=30).text)
    return http.post(action, data={"csrf_token": token, **data}, allow_redirects=False, timeout=30)


@pytest.mark.parametrize(("data", "status", "field", "words"), [
    ({"role": "owner", "state": "active"}, 400, "role", "role must be one of"),
    ({"role": "site-admin", "state": "disabled"}, 403, "role", "only site admins"),
    ({"role": "admin", "state": "gone"}, 400, "state", "state must be one of"),
])
def test_refusals_of_the_change_form_name_the_field(server: GitServer, data: dict[str, str], status: int,
                                                    field: str, words: str) -> None:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    http = signed_in(server, server.new_user(tenant, role="admin"))
    page = f"{server.http_url}/ui/-/admin/{tenant}/users/{member.name}"
    answer = _post(http, page, f"{page}/change", **data)
    assert answer.status_code == status, answer.text
    assert f'id="change-user-{field}-error">' in answer.text and words in answer.text
    assert f'name="{field}" aria-describedby="change-user-{field}-error" aria-invalid="true"' in answer.text
    with server.db() as session:
        row = session.get(models.User, member.id)
        assert row is not None and (row.role, row.disabled) == ("member", False)  # nothing written


def test_a_member_gets_403_another_tenants_admin_404_and_a_site_admin_is_out_of_reach(server: GitServer) -> None:
    tenant, other = server.new_tenant(), server.new_tenant()
    member = server.new_user(tenant)
    site_admin = server.new_user(tenant, role="site-admin")
    repo = server.new_repo(tenant, grants={member.name: "write"})
    deploy_id = _add_deploy_key(server, tenant, repo)
    assert server.api("POST", f"/api/v1/tenants/{tenant}/groups", {"name": "ops"}).status_code == 201
    assert server.api("PUT", f"/api/v1/tenants/{tenant}/groups/ops/members/{member.name}").status_code == 200
    base = f"{server.http_url}/ui/-/admin/{tenant}"
    actions = ((f"{base}/users/{member.name}/change", {"role": "admin", "state": "active"}),
               (f"{base}/groups/ops/members", {"user": site_admin.name}),
               (f"{base}/groups/ops/members/{member.name}/remove", {}),
               (f"{server.http_url}/ui/{tenant}/{repo}/access/deploy-keys/{deploy_id}/remove", {}))
    for who, status in ((member, 403), (server.new_user(other, role="admin"), 404)):
        http = signed_in(server, who)
        token = csrf_token(http.get(f"{server.http_url}/ui/{who.tenant}", timeout=30).text)
        for action, data in actions:
            answer = http.post(action, data={"csrf_token": token, **data}, allow_redirects=False, timeout=30)
            assert answer.status_code == status, (who.name, action, answer.status_code)
        assert http.get(f"{base}/groups/ops", timeout=30).status_code == status
    # A tenant admin neither changes nor disables a site admin (as the API).
    as_admin = signed_in(server, server.new_user(tenant, role="admin"))
    refused = _post(as_admin, base, f"{base}/users/{site_admin.name}/change", role="member", state="disabled")
    assert refused.status_code == 403 and "site admin" in refused.text
    # No CSRF token: 403, nothing removed.
    bare = as_admin.post(f"{base}/groups/ops/members/{member.name}/remove", allow_redirects=False, timeout=30)
    assert bare.status_code == 403
    with server.db() as session:
        row = session.get(models.User, site_admin.id)
        assert row is not None and (row.role, row.disabled) == ("site-admin", False)
        assert session.get(models.User, member.id).role == "member"  # type: ignore[union-attr]
        assert session.scalars(select(models.GroupMember.user_id)).all().count(member.id) == 1
        assert session.get(models.DeployKey, deploy_id) is not None
