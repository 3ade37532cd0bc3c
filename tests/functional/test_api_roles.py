"""The role table: site admin > tenant admin > member, and another tenant's admin, for every
kind of action, as HTTP statuses from the real server.

Each row is one action against tenant T; the four columns are who does it. Hidden things answer
404 exactly like missing ones (another tenant's admin never gets a 403 that would confirm a
name exists); visible but not allowed answers 403; protected history answers 405.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import requests

from tests.functional.conftest import GitServer, User, unique

ROLES = ("site_admin", "tenant_admin", "member", "other_admin")


@dataclasses.dataclass
class World:
    server: GitServer
    tenant: str
    tenant_admin: User
    member: User
    other_admin: User
    repos: dict[str, str]  # label -> repo name in tenant

    def token(self, role: str) -> str:
        if role == "site_admin":
            return self.server.admin_token
        return getattr(self, role).token

    def url(self, path: str = "") -> str:
        return f"/api/v1/tenants/{self.tenant}{path}"

    def repo(self, label: str, path: str = "") -> str:
        return self.url(f"/repos/{self.repos[label]}{path}")

    def fresh_user(self, role: str = "member") -> User:
        return self.server.new_user(self.tenant, role=role)


@pytest.fixture(scope="module")
def world(server: GitServer) -> World:
    tenant = server.new_tenant()
    other = server.new_tenant()
    tenant_admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    other_admin = server.new_user(other, role="admin")
    repos = {
        "private": server.new_repo(tenant),
        "internal": server.new_repo(tenant, visibility="internal"),
        "public": server.new_repo(tenant, visibility="public"),
        "read": server.new_repo(tenant, grants={member.name: "read"}),
        "write": server.new_repo(tenant, grants={member.name: "write"}),
        "admin": server.new_repo(tenant, grants={member.name: "admin"}),
    }
    server.api("POST", f"/api/v1/tenants/{tenant}/groups", {"name": "devs"})
    return World(server, tenant, tenant_admin, member, other_admin, repos)


Action = Callable[[World, str], requests.Response]


def call(w: World, role: str, method: str, path: str, body: object = None) -> requests.Response:
    return w.server.api(method, path, body, token=w.token(role))


def _new_key(w: World) -> str:
    return w.server.new_key("role")[1]


# action name -> (action, expected statuses for ROLES)
TABLE: dict[str, tuple[Action, tuple[int, int, int, int]]] = {
    "get tenant": (lambda w, r: call(w, r, "GET", w.url()), (200, 200, 200, 404)),
    "create tenant": (lambda w, r: call(w, r, "POST", "/api/v1/tenants", {"name": unique("t")}),
                      (201, 403, 403, 403)),
    "list users": (lambda w, r: call(w, r, "GET", w.url("/users")), (200, 200, 200, 404)),
    "create member": (lambda w, r: call(w, r, "POST", w.url("/users"), {"name": unique("u")}),
                      (201, 201, 403, 404)),
    "create site admin": (lambda w, r: call(w, r, "POST", w.url("/users"),
                                            {"name": unique("u"), "role": "site-admin"}), (201, 403, 403, 404)),
    "make member admin": (lambda w, r: call(w, r, "PATCH", w.url(f"/users/{w.fresh_user().name}"),
                                            {"role": "admin"}), (200, 200, 403, 404)),
    "make member site admin": (lambda w, r: call(w, r, "PATCH", w.url(f"/users/{w.fresh_user().name}"),
                                                 {"role": "site-admin"}), (200, 403, 403, 404)),
    "disable member": (lambda w, r: call(w, r, "DELETE", w.url(f"/users/{w.fresh_user().name}")),
                       (204, 204, 403, 404)),
    "disable site admin": (lambda w, r: call(w, r, "DELETE", w.url(f"/users/{w.fresh_user('site-admin').name}")),
                           (204, 403, 403, 404)),
    "add key to another user": (lambda w, r: call(w, r, "POST", w.url(f"/users/{w.fresh_user().name}/keys"),
                                                  {"key": _new_key(w)}), (201, 201, 403, 404)),
    "add key to member (self)": (lambda w, r: call(w, r, "POST", w.url(f"/users/{w.member.name}/keys"),
                                                   {"key": _new_key(w)}), (201, 201, 201, 404)),
    "list member's tokens (self)": (lambda w, r: call(w, r, "GET", w.url(f"/users/{w.member.name}/tokens")),
                                    (200, 200, 200, 404)),
    "list admin's keys": (lambda w, r: call(w, r, "GET", w.url(f"/users/{w.tenant_admin.name}/keys")),
                          (200, 200, 403, 404)),
    "create token for another user": (lambda w, r: call(w, r, "POST", w.url(f"/users/{w.fresh_user().name}/tokens")),
                                      (201, 201, 403, 404)),
    "create group": (lambda w, r: call(w, r, "POST", w.url("/groups"), {"name": unique("g")}),
                     (201, 201, 403, 404)),
    "add group member": (lambda w, r: call(w, r, "PUT", w.url(f"/groups/devs/members/{w.fresh_user().name}")),
                         (200, 200, 403, 404)),
    "create repo": (lambda w, r: call(w, r, "POST", w.url("/repos"), {"name": unique("r")}),
                    (201, 201, 403, 404)),
    "get private repo": (lambda w, r: call(w, r, "GET", w.repo("private")), (200, 200, 404, 404)),
    "get internal repo": (lambda w, r: call(w, r, "GET", w.repo("internal")), (200, 200, 200, 404)),
    "get public repo": (lambda w, r: call(w, r, "GET", w.repo("public")), (200, 200, 200, 200)),
    "get repo granted read": (lambda w, r: call(w, r, "GET", w.repo("read")), (200, 200, 200, 404)),
    "patch repo granted read": (lambda w, r: call(w, r, "PATCH", w.repo("read"), {"description": "x"}),
                                (200, 200, 403, 404)),
    "patch repo granted admin": (lambda w, r: call(w, r, "PATCH", w.repo("admin"), {"description": "x"}),
                                 (200, 200, 200, 404)),
    "patch private repo": (lambda w, r: call(w, r, "PATCH", w.repo("private"), {"description": "x"}),
                           (200, 200, 404, 404)),
    "delete private repo": (lambda w, r: call(w, r, "DELETE", w.repo("private")), (405, 405, 404, 404)),
    "delete repo granted admin": (lambda w, r: call(w, r, "DELETE", w.repo("admin")), (405, 405, 405, 404)),
    "list grants, granted read": (lambda w, r: call(w, r, "GET", w.repo("read", "/grants")),
                                  (200, 200, 403, 404)),
    "grant write, granted write": (lambda w, r: call(w, r, "PUT",
                                                     w.repo("write", f"/grants/users/{w.fresh_user().name}"),
                                                     {"permission": "write"}), (201, 201, 403, 404)),
    "grant admin, granted admin": (lambda w, r: call(w, r, "PUT",
                                                     w.repo("admin", f"/grants/users/{w.fresh_user().name}"),
                                                     {"permission": "admin"}), (201, 201, 201, 404)),
    "grant on private repo": (lambda w, r: call(w, r, "PUT", w.repo("private", f"/grants/users/{w.fresh_user().name}"),
                                                {"permission": "read"}), (201, 201, 404, 404)),
    "add deploy key, granted admin": (lambda w, r: call(w, r, "POST", w.repo("admin", "/deploy-keys"),
                                                        {"key": _new_key(w), "write": True}), (201, 201, 201, 404)),
    "add deploy key, granted read": (lambda w, r: call(w, r, "POST", w.repo("read", "/deploy-keys"),
                                                       {"key": _new_key(w)}), (201, 201, 403, 404)),
    "audit log, granted read": (lambda w, r: call(w, r, "GET", w.repo("read", "/pushes")), (200, 200, 200, 404)),
    "audit log, private repo": (lambda w, r: call(w, r, "GET", w.repo("private", "/pushes")), (200, 200, 404, 404)),
}


@pytest.mark.parametrize("action", list(TABLE))
def test_role_table(world: World, action: str) -> None:
    fn, expected = TABLE[action]
    got = {}
    for role in ROLES:
        resp = fn(world, role)
        assert "Traceback" not in resp.text
        got[role] = resp.status_code
    assert got == dict(zip(ROLES, expected, strict=False)), f"{action}: got {got}"


def test_hidden_answers_exactly_like_missing(world: World) -> None:
    """Another tenant's admin gets the very same body for a real private repo as for a name
    that does not exist, and for a real tenant as for a missing one."""
    def body(path: str) -> tuple[int, dict[str, str]]:
        resp = call(world, "other_admin", "GET", path)
        return resp.status_code, resp.json()

    status, hidden = body(world.repo("private"))
    missing = body(world.url("/repos/does-not-exist"))[1]
    assert status == 404
    assert hidden["description"].replace(world.repos["private"], "X") == missing["description"].replace(
        "does-not-exist", "X")
    hidden_tenant = body(world.url())[1]
    missing_tenant = body("/api/v1/tenants/no-such-tenant")[1]
    assert hidden_tenant["description"].replace(world.tenant, "X") == missing_tenant["description"].replace(
        "no-such-tenant", "X")


def test_lists_show_only_what_the_caller_can_see(world: World) -> None:
    def repo_names(role: str) -> set[str]:
        resp = call(world, role, "GET", world.url("/repos"))
        assert resp.status_code == 200
        return {r["name"] for r in resp.json()["items"]}

    readable = {world.repos[k] for k in ("internal", "public", "read", "write", "admin")}
    assert repo_names("member") & set(world.repos.values()) == readable
    assert set(world.repos.values()) <= repo_names("tenant_admin")
    assert set(world.repos.values()) <= repo_names("site_admin")
    assert call(world, "other_admin", "GET", world.url("/repos")).status_code == 404
    tenants = [t["name"] for t in call(world, "member", "GET", "/api/v1/tenants").json()["items"]]
    assert tenants == [world.tenant]
