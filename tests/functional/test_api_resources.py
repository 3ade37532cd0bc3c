"""The admin REST API per resource, against the real ``gitserver serve`` (gunicorn) on SQLite
and PostgreSQL: what a client sends and what it gets back, status, headers and body."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import requests

from tests.functional.conftest import GitServer, commit_files, make_repo, unique

API = "/api/v1"


def tenant_url(tenant: str) -> str:
    return f"{API}/tenants/{tenant}"


def assert_error(resp: requests.Response, status: int, *, field: str | None = None,
                 contains: str = "") -> dict[str, str]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) >= {"title", "description"}
    assert "Traceback" not in resp.text
    if field is not None:
        assert body.get("field") == field, body
    assert contains in body["description"], body
    return body


def ssh_keygen_fingerprint(public_key_path: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key_path)], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[1]


# --- tenants -------------------------------------------------------------------------------------

def test_tenants_create_get_list_conflict(server: GitServer) -> None:
    name = unique("t")
    resp = server.api("POST", f"{API}/tenants", {"name": name, "description": "Acme Corp"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"].endswith(tenant_url(name))
    created = resp.json()
    assert created["name"] == name and created["description"] == "Acme Corp"
    assert server.api("GET", tenant_url(name)).json() == created

    assert_error(server.api("POST", f"{API}/tenants", {"name": name}), 409, contains="already exists")
    for bad in ("../etc", "-x", "a b", "x.git", "é", "a" * 101):
        assert_error(server.api("POST", f"{API}/tenants", {"name": bad}), 400, field="name")

    # Paging: walk the list with a small page size and find every tenant exactly once.
    seen, ids, cursor = [], [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = server.api("GET", f"{API}/tenants", params=params).json()
        assert len(page["items"]) <= 2
        seen += [t["name"] for t in page["items"]]
        ids += [t["id"] for t in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen.count(name) == 1
    assert ids == sorted(set(ids))  # stable order, no row twice


# --- users ---------------------------------------------------------------------------------------

def test_users_create_patch_disable(server: GitServer) -> None:
    tenant = server.new_tenant()
    resp = server.api("POST", f"{tenant_url(tenant)}/users", {"name": "carol"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"].endswith(f"{tenant_url(tenant)}/users/carol")
    assert resp.json() | {"id": 0, "created_at": ""} == {
        "id": 0, "tenant": tenant, "name": "carol", "role": "member", "disabled": False, "created_at": ""}
    assert_error(server.api("POST", f"{tenant_url(tenant)}/users", {"name": "carol"}), 409)
    assert_error(server.api("POST", f"{tenant_url(tenant)}/users", {"name": "dave", "role": "root"}),
                 400, field="role")
    assert_error(server.api("POST", f"{tenant_url(tenant)}/users", {"name": "dave", "admin": True}),
                 400, field="admin")

    user_url = f"{tenant_url(tenant)}/users/carol"
    resp = server.api("PATCH", user_url, {"role": "admin"})
    assert resp.status_code == 200 and resp.json()["role"] == "admin"
    assert_error(server.api("PATCH", user_url, {"disabled": "yes"}), 400, field="disabled")

    # DELETE disables: the user stays (pushes keep their author) and its token stops at once.
    user = server.new_user(tenant)
    assert server.api("GET", tenant_url(tenant), token=user.token).status_code == 200
    assert server.api("DELETE", f"{tenant_url(tenant)}/users/{user.name}").status_code == 204
    assert server.api("GET", f"{tenant_url(tenant)}/users/{user.name}").json()["disabled"] is True
    assert_error(server.api("GET", tenant_url(tenant), token=user.token), 401)
    # Re-enabling restores the same token.
    server.api("PATCH", f"{tenant_url(tenant)}/users/{user.name}", {"disabled": False})
    assert server.api("GET", tenant_url(tenant), token=user.token).status_code == 200

    names = [u["name"] for u in server.api("GET", f"{tenant_url(tenant)}/users").json()["items"]]
    assert names == ["carol", user.name]
    assert_error(server.api("GET", f"{tenant_url(tenant)}/users/nobody"), 404)


# --- keys ----------------------------------------------------------------------------------------

def test_keys_add_list_delete_and_refusals(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    other = server.new_user(tenant)
    keys_url = f"{tenant_url(tenant)}/users/{user.name}/keys"
    key_path, public = server.new_key()

    resp = server.api("POST", keys_url, {"key": public, "title": "laptop"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["fingerprint"] == ssh_keygen_fingerprint(key_path.with_suffix(".pub"))
    assert body["title"] == "laptop" and body["key_type"] == "ssh-ed25519" and body["bits"] == 256
    assert resp.headers["Location"].endswith(f"{keys_url}/{body['id']}")
    assert server.api("GET", f"{keys_url}/{body['id']}").json() == body

    # One key is one identity, wherever it is registered.
    assert_error(server.api("POST", f"{tenant_url(tenant)}/users/{other.name}/keys", {"key": public}),
                 409, contains=body["fingerprint"])
    assert_error(server.api("POST", keys_url, {"key": public}), 409, contains="already")
    repo = server.new_repo(tenant)
    assert_error(server.api("POST", f"{tenant_url(tenant)}/repos/{repo}/deploy-keys", {"key": public}),
                 409, contains=body["fingerprint"])

    rsa_path = tmp_path / "rsa1024"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(rsa_path)], check=True)
    refusals = {
        rsa_path.with_suffix(".pub").read_text(): "at least 2048",
        key_path.read_text(): "private key",
        "ssh-dss AAAAB3NzaC1kc3MAAAABAQ== me": "DSA",
        "ssh-ed25519 AAAA": "not valid",
        "hello": "OpenSSH format",
    }
    for text, reason in refusals.items():
        assert_error(server.api("POST", keys_url, {"key": text}), 400, field="key", contains=reason)
    assert_error(server.api("POST", keys_url, {"title": "no key"}), 400, field="key")

    listed = server.api("GET", keys_url).json()
    assert [k["fingerprint"] for k in listed["items"]] == [user.fingerprint, body["fingerprint"]]
    assert server.api("DELETE", f"{keys_url}/{body['id']}").status_code == 204
    assert_error(server.api("DELETE", f"{keys_url}/{body['id']}"), 404)
    # The key is free again once deleted.
    assert server.api("POST", f"{tenant_url(tenant)}/users/{other.name}/keys", {"key": public}).status_code == 201


# --- tokens --------------------------------------------------------------------------------------

def test_tokens_scopes_expiry_revocation(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    tokens_url = f"{tenant_url(tenant)}/users/{user.name}/tokens"
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).replace(microsecond=0)

    resp = server.api("POST", tokens_url, {"name": "ci", "scopes": ["read"], "expires_at": expires.isoformat()},
                      token=user.token)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    secret = created.pop("token")
    assert created["scopes"] == ["read"] and created["name"] == "ci"
    assert dt.datetime.fromisoformat(created["expires_at"]) == expires
    assert resp.headers["Location"].endswith(f"{tokens_url}/{created['id']}")

    listed = server.api("GET", tokens_url, token=user.token).json()["items"]
    assert secret not in str(listed) and all("token" not in t for t in listed)
    assert [t["name"] for t in listed] == ["tests", "ci"]

    # A read token reads, but cannot change anything nor mint a wider token.
    assert server.api("GET", tenant_url(tenant), token=secret).status_code == 200
    assert_error(server.api("POST", f"{tenant_url(tenant)}/repos", {"name": "x"}, token=secret), 403,
                 contains="scope")
    assert_error(server.api("POST", tokens_url, {"scopes": ["admin"]}, token=secret), 403)

    assert_error(server.api("POST", tokens_url, {"scopes": ["root"]}), 400, field="scopes")
    assert_error(server.api("POST", tokens_url, {"scopes": []}), 400, field="scopes")
    assert_error(server.api("POST", tokens_url, {"expires_at": "2001-01-01T00:00:00Z"}), 400, field="expires_at")
    assert_error(server.api("POST", tokens_url, {"expires_at": "tomorrow"}), 400, field="expires_at")

    # Revocation takes effect on the very next request.
    assert server.api("DELETE", f"{tokens_url}/{created['id']}", token=user.token).status_code == 204
    assert_error(server.api("GET", tenant_url(tenant), token=secret), 401)
    assert server.api("GET", f"{tokens_url}/{created['id']}").json()["revoked_at"] is not None

    # An expired token is refused the same way.
    default = server.api("POST", tokens_url, token=user.token)
    assert default.status_code == 201 and default.json()["scopes"] == ["read", "write", "admin"]
    from gitserver.db import models

    with server.db() as session:
        row = session.get(models.ApiToken, default.json()["id"])
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert_error(server.api("GET", tenant_url(tenant), token=default.json()["token"]), 401)


# --- groups --------------------------------------------------------------------------------------

def test_groups_and_members(server: GitServer) -> None:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    groups_url = f"{tenant_url(tenant)}/groups"
    resp = server.api("POST", groups_url, {"name": "devs", "description": "Developers"})
    assert resp.status_code == 201 and resp.headers["Location"].endswith(f"{groups_url}/devs")
    assert_error(server.api("POST", groups_url, {"name": "devs"}), 409)
    assert server.api("PATCH", f"{groups_url}/devs", {"description": "Devs"}).json()["description"] == "Devs"

    repo = server.new_repo(tenant)
    repo_url = f"{tenant_url(tenant)}/repos/{repo}"
    assert_error(server.api("GET", repo_url, token=member.token), 404)
    assert server.api("PUT", f"{repo_url}/grants/groups/devs", {"permission": "read"}).status_code == 201
    assert server.api("PUT", f"{groups_url}/devs/members/{member.name}").status_code == 200
    assert server.api("PUT", f"{groups_url}/devs/members/{member.name}").status_code == 200  # idempotent
    assert [u["name"] for u in server.api("GET", f"{groups_url}/devs/members").json()["items"]] == [member.name]
    assert server.api("GET", repo_url, token=member.token).status_code == 200

    assert server.api("DELETE", f"{groups_url}/devs/members/{member.name}").status_code == 204
    assert_error(server.api("GET", repo_url, token=member.token), 404)
    assert_error(server.api("GET", f"{groups_url}/devs/members/{member.name}"), 404)
    assert_error(server.api("PUT", f"{groups_url}/devs/members/nobody"), 404)

    assert server.api("DELETE", f"{groups_url}/devs").status_code == 204
    assert_error(server.api("GET", f"{groups_url}/devs"), 404)
    assert server.api("GET", f"{repo_url}/grants").json()["items"] == []


# --- repositories, grants, deploy keys ----------------------------------------------------------

def test_repos_create_get_patch_and_delete_refused(server: GitServer) -> None:
    tenant = server.new_tenant()
    repos_url = f"{tenant_url(tenant)}/repos"
    resp = server.api("POST", repos_url, {"name": "widgets", "description": "Our widgets",
                                          "visibility": "internal"})
    assert resp.status_code == 201, resp.text
    repo = resp.json()
    assert resp.headers["Location"].endswith(f"{repos_url}/widgets")
    assert repo["ssh_url"] == f"{server.ssh_base}/{tenant}/widgets.git"
    assert repo["http_url"] == f"{server.http_url}/git/{tenant}/widgets.git"
    assert (repo["visibility"], repo["builds_enabled"], repo["description"]) == ("internal", False, "Our widgets")
    assert (server.repo_path(tenant, "widgets") / "HEAD").is_file()

    assert_error(server.api("POST", repos_url, {"name": "widgets"}), 409)
    assert_error(server.api("POST", repos_url, {"name": "w", "visibility": "secret"}), 400, field="visibility")
    assert_error(server.api("POST", repos_url, {"name": "w", "description": 5}), 400, field="description")
    assert_error(server.api("POST", repos_url, {"name": "w.git"}), 400, field="name")

    patched = server.api("PATCH", f"{repos_url}/widgets", {"visibility": "private", "builds_enabled": True,
                                                          "description": "New"}).json()
    assert (patched["visibility"], patched["builds_enabled"], patched["description"]) == ("private", True, "New")
    assert server.api("GET", f"{repos_url}/widgets").json() == patched
    assert_error(server.api("PATCH", f"{repos_url}/widgets", {"name": "renamed"}), 400, field="name")

    body = assert_error(server.api("DELETE", f"{repos_url}/widgets"), 405, contains="history is protected")
    assert body["title"] == "Method Not Allowed"
    assert (server.repo_path(tenant, "widgets") / "HEAD").is_file()
    assert server.api("GET", f"{repos_url}/widgets").status_code == 200
    assert_error(server.api("DELETE", f"{repos_url}/missing"), 404)
    assert [r["name"] for r in server.api("GET", repos_url).json()["items"]] == ["widgets"]


def test_grants_put_get_list_delete(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant)
    grant_url = f"{tenant_url(tenant)}/repos/{repo}/grants/users/{user.name}"
    resp = server.api("PUT", grant_url, {"permission": "write"})
    assert resp.status_code == 201 and resp.headers["Location"].endswith(grant_url)
    assert resp.json()["user"] == user.name and resp.json()["group"] is None
    resp = server.api("PUT", grant_url, {"permission": "read"})
    assert resp.status_code == 200 and resp.json()["permission"] == "read"
    assert server.api("GET", grant_url).json()["permission"] == "read"
    assert_error(server.api("PUT", grant_url, {"permission": "owner"}), 400, field="permission")
    assert_error(server.api("PUT", grant_url, {}), 400, field="permission")
    assert_error(server.api("PUT", f"{tenant_url(tenant)}/repos/{repo}/grants/users/nobody",
                            {"permission": "read"}), 404)
    listed = server.api("GET", f"{tenant_url(tenant)}/repos/{repo}/grants").json()["items"]
    assert [(g["user"], g["permission"]) for g in listed] == [(user.name, "read")]
    assert server.api("DELETE", grant_url).status_code == 204
    assert_error(server.api("DELETE", grant_url), 404)


def test_deploy_keys(server: GitServer) -> None:
    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    url = f"{tenant_url(tenant)}/repos/{repo}/deploy-keys"
    key_path, public = server.new_key("deploy")
    resp = server.api("POST", url, {"key": public, "title": "ci"})
    assert resp.status_code == 201, resp.text
    deploy = resp.json()
    assert deploy["write"] is False and deploy["title"] == "ci"
    assert deploy["fingerprint"] == ssh_keygen_fingerprint(key_path.with_suffix(".pub"))
    assert resp.headers["Location"].endswith(f"{url}/{deploy['id']}")
    assert server.api("GET", f"{url}/{deploy['id']}").json() == deploy
    _path2, public2 = server.new_key("deploy")
    assert server.api("POST", url, {"key": public2, "write": True}).json()["write"] is True
    assert_error(server.api("POST", url, {"key": public2}), 409)
    assert_error(server.api("POST", url, {"key": public, "write": "yes"}), 400, field="write")
    # A deploy key can never also be a user key.
    user = server.new_user(tenant)
    assert_error(server.api("POST", f"{tenant_url(tenant)}/users/{user.name}/keys", {"key": public}), 409,
                 contains="deploy key")
    assert len(server.api("GET", url).json()["items"]) == 2
    assert server.api("DELETE", f"{url}/{deploy['id']}").status_code == 204
    assert_error(server.api("GET", f"{url}/{deploy['id']}"), 404)
    assert_error(server.api("GET", f"{url}/99999999999"), 404)


def test_push_audit_log(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    alice = server.new_user(tenant, role="admin")
    bob = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={bob.name: "write"})
    work = make_repo(tmp_path / "work", server.git_env)
    url = server.repo_url(tenant, repo)
    server.git(alice, "push", url, "main", cwd=work)
    commit_files(work, server.git_env, {"b.txt": "b"})
    server.git(bob, "push", url, "main:refs/heads/feature", cwd=work)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()

    pushes_url = f"{tenant_url(tenant)}/repos/{repo}/pushes"
    items = server.api("GET", pushes_url).json()["items"]
    assert [p["user"] for p in items] == [bob.name, alice.name]  # newest first
    assert items[0]["ref_updates"] == [{"ref": "refs/heads/feature", "old": "0" * 40, "new": head,
                                        "rules": None, "signatures": None}]  # no rule list in force
    assert items[0]["key_fingerprint"] == bob.fingerprint and items[0]["protocol"] == "ssh"
    def pushers(**params: str) -> list[str]:
        return [p["user"] for p in server.api("GET", pushes_url, params=params).json()["items"]]

    assert pushers(ref="feature") == [bob.name]
    assert pushers(ref="refs/heads/main") == [alice.name]
    assert pushers(user=alice.name) == [alice.name]
    assert server.api("GET", pushes_url, params={"user": "nobody"}).json()["items"] == []
    page = server.api("GET", pushes_url, params={"limit": "1"}).json()
    rest = server.api("GET", pushes_url, params={"limit": "1", "cursor": page["next"]}).json()
    assert [page["items"][0]["id"], rest["items"][0]["id"]] == [items[0]["id"], items[1]["id"]]
    assert rest["next"] is None
    # Readers see the log; the member can read through its grant.
    assert server.api("GET", pushes_url, token=bob.token).status_code == 200

    # Deleting the key that pushed keeps the audit record, fingerprint included.
    keys_url = f"{tenant_url(tenant)}/users/{bob.name}/keys"
    key_id = server.api("GET", keys_url).json()["items"][0]["id"]
    assert server.api("DELETE", f"{keys_url}/{key_id}").status_code == 204
    after = server.api("GET", pushes_url, params={"user": bob.name}).json()["items"]
    assert [(p["id"], p["key_fingerprint"]) for p in after] == [(items[0]["id"], bob.fingerprint)]


# --- conventions ---------------------------------------------------------------------------------

def test_conventions_errors_are_json_and_name_the_problem(server: GitServer) -> None:
    tenant = server.new_tenant()
    resp = server.api("GET", f"{API}/tenants", token="")
    assert_error(resp, 401)
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert_error(server.api("GET", f"{API}/tenants", token="gst_not-a-token"), 401)
    assert_error(server.api("GET", f"{API}/tenants", headers={"Authorization": "Basic !!"}, token=""), 401)
    # HTTP Basic with the token as password works too (git over HTTP sends only that).
    assert requests.get(server.http_url + tenant_url(tenant), auth=("git", server.admin_token),
                        timeout=10).status_code == 200

    assert_error(server.api("GET", f"{API}/no-such-thing"), 404)
    assert_error(server.api("PUT", f"{API}/tenants"), 405)
    assert_error(server.api("GET", f"{API}/tenants", params={"limit": "0"}), 400, field="limit")
    assert_error(server.api("GET", f"{API}/tenants", params={"limit": "101"}), 400, field="limit")
    assert_error(server.api("GET", f"{API}/tenants", params={"cursor": "bogus"}), 400, field="cursor")

    repos_url = f"{tenant_url(tenant)}/repos"
    big = {"name": "big", "description": "x" * (1024 * 1024 + 1)}
    assert_error(server.api("POST", repos_url, big), 400, field="body", contains="larger than")
    assert_error(server.api("POST", repos_url, data=b"{not json", headers={"Content-Type": "application/json"}),
                 400, field="body")
    assert_error(server.api("POST", repos_url, json=["widgets"]), 400, field="body")
    assert_error(server.api("POST", repos_url, json={"name": "x", "visibilty": "public"}), 400, field="visibilty")
    # curl -d sends form-urlencoded by default; the README's examples rely on the body being read as JSON.
    resp = server.api("POST", repos_url, data='{"name": "curl"}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 201, resp.text


def test_openapi_document_served(server: GitServer) -> None:
    resp = server.api("GET", f"{API}/openapi.json", token="")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    for path in (f"{API}/tenants", f"{API}/tenants/{{tenant}}/repos/{{repo}}/deploy-keys",
                 f"{API}/tenants/{{tenant}}/repos/{{repo}}/pushes",
                 f"{API}/tenants/{{tenant}}/users/{{user}}/tokens/{{token_id}}"):
        assert path in doc["paths"], path


# --- CLI mirrors ---------------------------------------------------------------------------------

def test_cli_mirrors_share_the_api_rules(server: GitServer) -> None:
    tenant = unique("t")
    assert f"tenant {tenant} created" in server.cli("tenant", "create", tenant, "--description", "CLI").stdout
    server.cli("user", "create", tenant, "erin", "--role", "admin")
    server.cli("user", "create", tenant, "frank")
    key_path, public = server.new_key()
    out = server.cli("key", "add", tenant, "erin", str(key_path.with_suffix(".pub"))).stdout
    assert ssh_keygen_fingerprint(key_path.with_suffix(".pub")) in out
    out = server.cli("repo", "create", tenant, "tools", "--description", "Tools", "--visibility", "internal").stdout
    assert f"{server.ssh_base}/{tenant}/tools.git" in out
    server.cli("grant", tenant, "tools", "write", "--user", "frank")

    assert server.api("GET", tenant_url(tenant)).json()["description"] == "CLI"
    assert server.api("GET", f"{tenant_url(tenant)}/users/erin").json()["role"] == "admin"
    keys = server.api("GET", f"{tenant_url(tenant)}/users/erin/keys").json()["items"]
    assert keys[0]["key"].startswith("ssh-ed25519")
    assert server.api("GET", f"{tenant_url(tenant)}/repos/tools").json()["visibility"] == "internal"
    assert server.api("GET", f"{tenant_url(tenant)}/repos/tools/grants/users/frank").json()["permission"] == "write"

    # The same refusals as the API, as one line on stderr and exit status 1.
    for argv, message in [(("key", "add", tenant, "frank", public), "already registered"),
                          (("repo", "create", tenant, "../x"), "must match")]:
        result = server.cli(*argv, check=False)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
