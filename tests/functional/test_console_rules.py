"""The console's rules pages (docs/console.md, docs/ref-rules.md) over plain HTTP against the
real ``gitserver serve``, on SQLite and PostgreSQL: readers see a repository's rules and their
history but no form, its admins replace the list through the form (the API then answers the
new rule-set id), a POST without the CSRF token or with a bad list changes nothing, hostile
text is shown escaped, and a tenant's defaults have their page too."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.functional.conftest import GitServer, User
from tests.functional.console_helpers import csrf_token, signed_in

FORM = 'id="set-rules"'
HOSTILE_PATTERN = "refs/heads/<script>window.pwned=1</script>"
HOSTILE_PATH = '"><img src=x onerror=window.pwned=2>'


def api_rules(server: GitServer, tenant: str, repo: str | None = None) -> dict[str, Any]:
    path = f"/api/v1/tenants/{tenant}" + (f"/repos/{repo}" if repo else "") + "/rules"
    resp = server.api("GET", path)
    assert resp.status_code == 200, resp.text
    return resp.json()


def put_rules(server: GitServer, tenant: str, repo: str, rules: list[dict[str, Any]], admin: User) -> str:
    resp = server.api("PUT", f"/api/v1/tenants/{tenant}/repos/{repo}/rules", json=rules, token=admin.token)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def post_form(http: requests.Session, url: str, rules: str, token: str | None) -> requests.Response:
    data = {"rules": rules} if token is None else {"rules": rules, "csrf_token": token}
    return http.post(url, data=data, allow_redirects=False, timeout=30)


def _setup(server: GitServer) -> tuple[str, str, User, User]:
    tenant = server.new_tenant()
    admin, member = server.new_user(tenant, role="admin"), server.new_user(tenant)
    repo = server.new_repo(tenant, grants={member.name: "write"})
    return tenant, repo, admin, member


def test_a_member_sees_the_rules_and_their_history_but_no_form(server: GitServer) -> None:
    tenant, repo, admin, member = _setup(server)
    first = put_rules(server, tenant, repo, [{"pattern": "refs/heads/*", "linear": True}], admin)
    second = put_rules(server, tenant, repo, [
        {"pattern": "refs/heads/main", "require_signed": True, "push": {"users": [admin.name]}},
        {"pattern": "refs/heads/*", "max_file_bytes": 10485760, "forbidden_paths": ["*.pem", "secrets/"]}], admin)
    http = signed_in(server, member)
    base = server.http_url + f"/ui/{tenant}/{repo}"
    assert f'href="/ui/{tenant}/{repo}/rules"' in http.get(base, timeout=30).text  # the repository's navigation
    page = http.get(base + "/rules", timeout=30)
    assert page.status_code == 200, page.text
    text = page.text
    assert f"<code>{second}</code>" in text and first in text  # in force, and in the history
    assert f"Replaced <code>{first}</code>" in text and "The first list." in text
    assert "this repository" in text and f"{tenant}/{admin.name}" in text  # who changed it
    for words in ("refs/heads/main", f"users {admin.name}", "must be signed", "10.0 MiB (10485760 bytes)",
                  "*.pem, secrets/", "whoever the grants let write", "linear: no merge commits"):
        assert words in text, words
    assert FORM not in text and 'name="rules"' not in text
    # Nor may a writer post one, even with its own valid token.
    refused = post_form(http, base + "/rules", "[]", csrf_token(text))
    assert refused.status_code == 403
    assert api_rules(server, tenant, repo)["id"] == second


def test_an_admin_replaces_the_list_through_the_form(server: GitServer) -> None:
    tenant, repo, admin, _member = _setup(server)
    old = put_rules(server, tenant, repo, [{"pattern": "refs/heads/*", "linear": True}], admin)
    http = signed_in(server, admin)
    url = server.http_url + f"/ui/{tenant}/{repo}/rules"
    page = http.get(url, timeout=30).text
    assert FORM in page and "&#34;linear&#34;: true" in page  # the list in force, in the textarea
    assert f'href="/ui/{tenant}/{repo}/rules"' in http.get(url.removesuffix("/rules") + "/access", timeout=30).text
    new_list = [{"pattern": "refs/tags/v*", "create": {"users": [admin.name]}}]
    done = post_form(http, url, json.dumps(new_list), csrf_token(page))
    assert done.status_code == 303 and done.headers["Location"] == f"/ui/{tenant}/{repo}/rules"
    held = api_rules(server, tenant, repo)
    assert held["id"] != old and held["rules"] == new_list and held["source"] == "repository"
    assert held["changed_by"] == f"{tenant}/{admin.name}"
    after = http.get(url, timeout=30).text
    assert f"<code>{held['id']}</code>" in after and f"Replaced <code>{old}</code>" in after
    assert f"users {admin.name}" in after and f"by {tenant}/{admin.name}" in after


def test_a_post_without_the_csrf_token_changes_nothing(server: GitServer) -> None:
    tenant, repo, admin, _member = _setup(server)
    old = put_rules(server, tenant, repo, [{"pattern": "refs/heads/*", "linear": True}], admin)
    http = signed_in(server, admin)
    url = server.http_url + f"/ui/{tenant}/{repo}/rules"
    for token in (None, "", "forged"):
        refused = post_form(http, url, "[]", token)
        assert refused.status_code == 403 and "CSRF" in refused.text, token
    tenant_url = server.http_url + f"/ui/-/rules/{tenant}"
    assert post_form(http, tenant_url, "[]", None).status_code == 403
    assert api_rules(server, tenant, repo)["id"] == old
    assert api_rules(server, tenant)["id"] is None


def test_a_bad_list_names_the_field_and_keeps_the_old_list(server: GitServer) -> None:
    tenant, repo, admin, _member = _setup(server)
    old = put_rules(server, tenant, repo, [{"pattern": "refs/heads/*", "linear": True}], admin)
    http = signed_in(server, admin)
    url = server.http_url + f"/ui/{tenant}/{repo}/rules"
    token = csrf_token(http.get(url, timeout=30).text)
    cases = {
        json.dumps([{"pattern": "refs/heads/main", "push": {"users": ["nosuchuser"]}}]): "rules.0.push.users.0",
        json.dumps([{"pattern": "refs/heads/a"}, {"pattern": "main"}]): "rules.1.pattern",
        json.dumps([{"pattern": "refs/heads/a", "colour": "red"}]): "rules.0.colour",
        json.dumps([{"pattern": "refs/heads/a", "max_file_bytes": 0}]): "rules.0.max_file_bytes",
        json.dumps([{"pattern": "refs/heads/a", "push": {"users": [7]}}]): "rules.0.push.users.0",
        json.dumps({"pattern": "refs/heads/a"}): "(rules)",
        "[{not json": "(rules)",
        "[NaN]": "(rules)"}
    for draft, field in cases.items():
        answer = post_form(http, url, draft, token)
        assert answer.status_code == 400, (draft, answer.text)
        assert field in answer.text and "The list in force is unchanged" in answer.text, (draft, answer.text)
        assert FORM in answer.text and f"<code>{old}</code>" in answer.text  # the page, with the old list
        assert draft.replace('"', "&#34;") in answer.text  # what was typed stays in the textarea
    assert api_rules(server, tenant, repo)["id"] == old


def test_hostile_text_in_a_rule_is_shown_escaped(server: GitServer) -> None:
    tenant, repo, admin, member = _setup(server)
    put_rules(server, tenant, repo, [{"pattern": HOSTILE_PATTERN, "forbidden_paths": [HOSTILE_PATH]}], admin)
    for who in (member, admin):
        text = signed_in(server, who).get(server.http_url + f"/ui/{tenant}/{repo}/rules", timeout=30).text
        assert "<script>window.pwned" not in text and "<img src=x" not in text, who.role
        assert "refs/heads/&lt;script&gt;window.pwned=1&lt;/script&gt;" in text
        assert "&#34;&gt;&lt;img src=x onerror=window.pwned=2&gt;" in text


def test_a_tenants_default_rules(server: GitServer) -> None:
    tenant, repo, admin, member = _setup(server)
    url = server.http_url + f"/ui/-/rules/{tenant}"
    as_admin, as_member = signed_in(server, admin), signed_in(server, member)
    assert f'href="/ui/-/rules/{tenant}"' in as_admin.get(server.http_url + f"/ui/-/admin/{tenant}", timeout=30).text
    page = as_admin.get(url, timeout=30).text
    assert FORM in page and "Never changed." in page
    done = post_form(as_admin, url, json.dumps([{"pattern": "refs/heads/main", "linear": True}]), csrf_token(page))
    assert done.status_code == 303, done.text
    held = api_rules(server, tenant)
    assert held["id"] is not None and held["source"] == "tenant"
    # A member reads the defaults, without the form; the repository shows where its list comes from.
    read = as_member.get(url, timeout=30)
    assert read.status_code == 200 and f"<code>{held['id']}</code>" in read.text and FORM not in read.text
    assert post_form(as_member, url, "[]", csrf_token(read.text)).status_code == 403
    repo_page = as_member.get(server.http_url + f"/ui/{tenant}/{repo}/rules", timeout=30).text
    assert "the defaults of tenant" in repo_page and f"<code>{held['id']}</code>" in repo_page
    bad = post_form(as_admin, url, json.dumps([{"pattern": "refs/heads/x", "push": {"groups": ["nogroup"]}}]),
                    csrf_token(page))
    assert bad.status_code == 400 and "rules.0.push.groups.0" in bad.text
    assert api_rules(server, tenant)["id"] == held["id"]
    # Another tenant's user finds no such tenant, as a missing one.
    stranger = signed_in(server, server.new_user(server.new_tenant(), role="admin"))
    assert stranger.get(url, timeout=30).status_code == 404
    assert stranger.get(server.http_url + f"/ui/{tenant}/{repo}/rules", timeout=30).status_code == 404
