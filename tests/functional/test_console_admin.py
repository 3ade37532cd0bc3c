"""The console's create forms for admins (users, groups, API tokens, deploy keys) in Debian's
Chromium and over plain HTTP, against the real ``gitserver serve`` on SQLite and PostgreSQL:
an admin creates each, a bad value is answered beside its field (and nothing is written), a
non-admin gets 403 and another tenant's admin 404, and axe-core checks the pages where it is
installed. Skipped, with the reason, only where Chromium or Playwright is missing."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import select

from gitserver.db import models
from tests.functional.conftest import GitServer
from tests.functional.console_helpers import (
    AXE,
    Tab,
    axe_violations,
    browser,
    csrf_token,
    login_url,
    screenshot,
    signed_in,
)

__all__ = ["browser"]


def _admin_tab(server: GitServer, browser: Any, tenant: str) -> Tab:
    admin = server.new_user(tenant, role="admin")
    tab = Tab(browser, bypass_csp=True)  # only so axe's script can be injected
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.http_url)
    tab.goto(login_url(server, admin))
    return tab


def _axe(tab: Tab) -> None:
    if AXE.is_file():
        assert axe_violations(tab.page) == [], tab.page.url


def test_an_admin_creates_a_user_a_group_a_token_and_a_deploy_key(server: GitServer, browser: Any) -> None:
    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    tab = _admin_tab(server, browser, tenant)
    tab.page.click("header >> text=Admin")
    _axe(tab)
    tab.page.fill("#new-user-name", "dora")
    tab.page.select_option("#new-user-role", "admin")
    tab.page.click("text=Create user")
    tab.page.wait_for_url(f"**/ui/-/admin/{tenant}/users/dora")
    assert f"{tenant}/dora" in tab.page.inner_text("h1")

    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}")
    tab.page.fill("#new-group-name", "ops")
    tab.page.fill("#new-group-description", "<b>on call</b>")
    tab.page.click("text=Create group")
    tab.page.wait_for_url(f"**/ui/-/admin/{tenant}#groups")
    assert "<b>on call</b>" in tab.page.inner_text("main")  # as typed, escaped

    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}/users/dora")
    tab.page.fill("#new-token-name", "ci")
    tab.page.uncheck("input[name=scopes][value=admin]")
    tab.page.click("text=Create token")
    secret = tab.page.inner_text("#new-token-secret")
    assert secret.startswith("gst_")
    tab.page.click("button[data-copy=new-token-secret]")
    assert tab.page.evaluate("navigator.clipboard.readText()") == secret
    screenshot(tab.page, "admin-token")
    _axe(tab)
    listed = server.api("GET", f"/api/v1/tenants/{tenant}/users", token=secret)
    assert listed.status_code == 200, listed.text  # the new token works
    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}/users/dora")
    assert secret not in tab.page.content()  # shown once, never again
    assert "read,write" in tab.page.inner_text("main")

    _key_path, public = server.new_key("deploy")
    tab.goto(f"{server.http_url}/ui/{tenant}/{repo}/access")
    tab.page.fill("#new-deploy-key-key", public)
    tab.page.fill("#new-deploy-key-title", "builder")
    tab.page.check("#new-deploy-key-write")
    tab.page.click("text=Add deploy key")
    tab.page.wait_for_url(f"**/ui/{tenant}/{repo}/access#deploy-keys")
    _axe(tab)
    with server.db() as session:
        dora = session.scalar(select(models.User).join(models.Tenant).where(
            models.Tenant.name == tenant, models.User.name == "dora"))
        assert dora is not None and dora.role == "admin"
        assert session.scalar(select(models.Group.description).where(models.Group.tenant_id == dora.tenant_id,
                                                                       models.Group.name == "ops")) == "<b>on call</b>"
        deploy = session.scalars(select(models.DeployKey).join(models.Repository)
                                 .where(models.Repository.name == repo)).one()
        assert deploy.write and deploy.public_key.title == "builder"
    assert not tab.errors, tab.errors
    tab.close()


def test_a_bad_name_is_answered_beside_its_field(server: GitServer, browser: Any) -> None:
    tenant = server.new_tenant()
    tab = _admin_tab(server, browser, tenant)
    tab.goto(f"{server.http_url}/ui/-/admin/{tenant}")
    tab.page.fill("#new-user-name", "-bad name")
    response_status: list[int] = []
    tab.page.on("response", lambda r: response_status.append(r.status) if r.request.method == "POST" else None)
    tab.page.click("text=Create user")
    tab.page.wait_for_selector("#new-user-name-error")
    assert response_status == [400]
    assert "must match" in tab.page.inner_text("#new-user-name-error")
    assert tab.page.get_attribute("#new-user-name", "aria-invalid") == "true"
    assert tab.page.input_value("#new-user-name") == "-bad name"  # what was typed, kept
    _axe(tab)
    with server.db() as session:
        assert session.scalar(select(models.User).where(models.User.name == "-bad name")) is None
    tab.close()


def _post(http: requests.Session, page_url: str, action: str, **data: str | list[str]) -> requests.Response:
    token = csrf_token(http.get(page_url, timeout=30).text)
    return http.post(action, data={"csrf_token": token, **data}, allow_redirects=False, timeout=30)


@pytest.mark.parametrize(("form", "action", "data", "status", "field", "words"), [
    ("new-user", "users", {"name": "x" * 101, "role": "member"}, 400, "name", "must match"),
    ("new-user", "users", {"name": "fine", "role": "owner"}, 400, "role", "role must be one of"),
    ("new-user", "users", {"name": "fine", "role": "site-admin"}, 403, "role", "only site admins"),
    ("new-group", "groups", {"name": "a..b"}, 400, "name", "must not contain"),
    ("new-group", "groups", {"name": "g", "description": "d" * 2001}, 400, "description", "at most 2000"),
])
def test_refusals_of_the_tenant_forms(server: GitServer, form: str, action: str, data: dict[str, str],
                                      status: int, field: str, words: str) -> None:
    tenant = server.new_tenant()
    http = signed_in(server, server.new_user(tenant, role="admin"))
    page = f"{server.http_url}/ui/-/admin/{tenant}"
    answer = _post(http, page, f"{page}/{action}", **data)
    assert answer.status_code == status, answer.text
    assert f'id="{form}-{field}-error">' in answer.text and words in answer.text
    with server.db() as session:
        assert session.scalar(select(models.Group).where(models.Group.name == data["name"])) is None
        assert session.scalar(select(models.User).where(models.User.name == data["name"])) is None


def test_refusals_of_the_token_and_deploy_key_forms(server: GitServer) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    http = signed_in(server, admin)
    page = f"{server.http_url}/ui/-/admin/{tenant}/users/{member.name}"
    for data, field, words in (({"expires_at": "tomorrow", "scopes": ["read"]}, "expires_at", "RFC 3339"),
                               ({"expires_at": "2001-01-01T00:00:00Z", "scopes": ["read"]}, "expires_at", "future"),
                               ({"name": "n" * 201, "scopes": ["read"]}, "name", "at most 200"),
                               ({"name": "none"}, "scopes", "scopes must not be empty")):
        answer = _post(http, page, page + "/tokens", **data)
        assert answer.status_code == 400 and f'id="new-token-{field}-error">' in answer.text, (data, answer.text)
        assert words in answer.text and "gst_" not in answer.text
    # A user name already taken: 409, beside the name.
    taken = _post(http, f"{server.http_url}/ui/-/admin/{tenant}", f"{server.http_url}/ui/-/admin/{tenant}/users",
                  name=member.name, role="member")
    assert taken.status_code == 409 and 'id="new-user-name-error">' in taken.text and "already exists" in taken.text
    repo = server.new_repo(tenant)
    access = f"{server.http_url}/ui/{tenant}/{repo}/access"
    for key, status, words in (("ssh-ed25519 nonsense", 400, "key"), (member.public_key, 409, "already registered")):
        answer = _post(http, access, access + "/deploy-keys", key=key, title="t")
        assert answer.status_code == status and 'id="new-deploy-key-key-error">' in answer.text, answer.text
        assert words in answer.text
    with server.db() as session:
        assert len(session.scalars(select(models.ApiToken).where(models.ApiToken.user_id == member.id)).all()) == 1
        assert session.scalars(select(models.DeployKey).join(models.Repository)
                               .where(models.Repository.name == repo)).all() == []


def test_a_non_admin_gets_403_and_another_tenants_admin_404(server: GitServer) -> None:
    tenant, other = server.new_tenant(), server.new_tenant()
    member = server.new_user(tenant)
    site_admin = server.new_user(tenant, role="site-admin")
    as_member = signed_in(server, member)
    own = csrf_token(as_member.get(f"{server.http_url}/ui/{tenant}", timeout=30).text)
    base = f"{server.http_url}/ui/-/admin/{tenant}"
    repo = server.new_repo(tenant, grants={member.name: "write"})
    for action, data in ((f"{base}/users", {"name": "eve", "role": "member"}), (f"{base}/groups", {"name": "eve"}),
                         (f"{base}/users/{member.name}/tokens", {"scopes": "read"}),
                         (f"{server.http_url}/ui/{tenant}/{repo}/access/deploy-keys", {"key": member.public_key})):
        answer = as_member.post(action, data={"csrf_token": own, **data}, allow_redirects=False, timeout=30)
        assert answer.status_code == 403, (action, answer.status_code)
    assert as_member.get(base, timeout=30).status_code == 403
    outsider = signed_in(server, server.new_user(other, role="admin"))
    theirs = csrf_token(outsider.get(f"{server.http_url}/ui/{other}", timeout=30).text)
    for action in (f"{base}/users", f"{base}/groups", f"{base}/users/{member.name}/tokens"):
        answer = outsider.post(action, data={"csrf_token": theirs, "name": "eve", "role": "member", "scopes": "read"},
                               allow_redirects=False, timeout=30)
        assert answer.status_code == 404, (action, answer.status_code)
    # A tenant admin manages no site admin's tokens (as the API).
    as_admin = signed_in(server, server.new_user(tenant, role="admin"))
    token = csrf_token(as_admin.get(base, timeout=30).text)
    refused = as_admin.post(f"{base}/users/{site_admin.name}/tokens", data={"csrf_token": token, "scopes": "read"},
                            allow_redirects=False, timeout=30)
    assert refused.status_code == 403 and "site admin" in refused.text
    with server.db() as session:
        assert session.scalar(select(models.User).where(models.User.name == "eve")) is None
        assert session.scalar(select(models.Group).where(models.Group.name == "eve")) is None
        # Only the tokens the test's users were made with.
        assert len(session.scalars(select(models.ApiToken).where(
            models.ApiToken.user_id.in_([member.id, site_admin.id]))).all()) == 2
