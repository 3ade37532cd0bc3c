"""The console's single sign-on client, without a network: which tenants an ID token names,
the attempt cookie, RP-initiated logout URLs, and refusals naming what was wrong (the real
flow against a loopback issuer is tests/functional/test_console_sso.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gitserver.config import load
from gitserver.console.forms import Form
from gitserver.identity import oidc_login
from gitserver.policy.errors import ConfigError, Conflict, InvalidInput

ISSUER = "https://id.example.org/realms/r"
ROLE_MAP = {"ops": ("tenant-admin:ops",), "root": ("site-admin",), "devs": ("tenant-admin:dev",)}


@pytest.mark.parametrize(("claims", "expected"), [
    ({}, ()),
    ({"tenant": "acme"}, ("acme",)),
    ({"tenant": ["acme", "beta", "acme"]}, ("acme", "beta")),
    ({"tenant": {"acme": {"id": "1"}, "beta": {}}}, ("acme", "beta")),  # Keycloak's organization claim
    ({"tenant": ["acme", 3, None, ""]}, ("acme",)),
    ({"tenant": 7}, ()),
    ({"realm_access": {"roles": ["ops", "root"]}}, ("ops",)),  # site-admin names no tenant
    ({"tenant": "acme", "resource_access": {"devs": {"roles": ["x"]}}, "realm_access": {"roles": ["devs"]}},
     ("acme", "dev")),
])
def test_the_tenants_an_id_token_names(claims: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert oidc_login.token_tenants(claims, "tenant", ROLE_MAP, "") == expected
    assert oidc_login.token_tenants(claims, "tenant", ROLE_MAP, "fallback") == (*expected, "fallback")


def test_no_tenant_claim_configured_reads_none() -> None:
    assert oidc_login.token_tenants({"tenant": "acme"}, "", {}, "") == ()
    assert len(oidc_login.token_tenants({"t": [f"n{i}" for i in range(500)]}, "t", {}, "")) == \
        oidc_login.MAX_CLAIMED_TENANTS


def test_the_attempt_cookie_keeps_the_tenant_dots_and_all() -> None:
    attempt = oidc_login.Attempt("s", "n", "v", "team.one", "https://x")
    assert oidc_login.parse_cookie(attempt.cookie()) == ("s", "n", "v", "team.one")
    assert oidc_login.parse_cookie("s.n.v") == ("s", "n", "v", "")
    assert oidc_login.parse_cookie("s..v.t") is None and oidc_login.parse_cookie("s.n") is None


def _sign_on(doc: dict[str, Any]) -> oidc_login.ConsoleSignOn:
    return oidc_login.ConsoleSignOn(ISSUER, "console", "", "preferred_username",
                                    fetch=lambda url, timeout: doc, post=lambda url, form, timeout: {})


BASE_DOC = {"authorization_endpoint": "https://id.example.org/auth", "token_endpoint": "https://id.example.org/token"}


def test_logout_at_the_issuer_carries_the_hint_and_the_way_back() -> None:
    sign_on = _sign_on({**BASE_DOC, "end_session_endpoint": "https://id.example.org/logout?x=1"})
    url = sign_on.logout_url("the.id.token", "https://git.example.org/ui")
    assert url is not None and url.startswith("https://id.example.org/logout?x=1&")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"x": "1", "client_id": "console", "id_token_hint": "the.id.token",
                     "post_logout_redirect_uri": "https://git.example.org/ui"}
    assert sign_on.origin == "https://id.example.org"


@pytest.mark.parametrize("doc", [BASE_DOC, {**BASE_DOC, "end_session_endpoint": "https://evil.example.net/logout"},
                                 {**BASE_DOC, "end_session_endpoint": 5}])
def test_no_logout_at_the_issuer_without_its_own_end_session_endpoint(doc: dict[str, Any]) -> None:
    assert _sign_on(doc).logout_url("t", "https://git.example.org/ui") is None


def test_an_unreachable_issuer_leaves_sign_out_local() -> None:
    def fetch(url: str, timeout: float) -> Any:
        raise OSError("down")

    sign_on = oidc_login.ConsoleSignOn(ISSUER, "console", "", "preferred_username", fetch=fetch)
    assert sign_on.logout_url("t", "https://git.example.org/ui") is None


def test_something_must_name_the_tenant_of_a_console_sign_on() -> None:
    base = {"GITSERVER_OIDC_ISSUER": ISSUER, "GITSERVER_OIDC_AUDIENCE": "api",
            "GITSERVER_OIDC_CONSOLE_CLIENT_ID": "console"}
    with pytest.raises(ConfigError, match="oidc_console_tenant_claim"):
        load(environ=base)
    for extra in ({"GITSERVER_OIDC_CONSOLE_TENANT": "acme"}, {"GITSERVER_OIDC_CONSOLE_TENANT_CLAIM": "organization"},
                  {"GITSERVER_OIDC_ROLE_MAP": "ops=tenant-admin:ops"}):
        assert load(environ={**base, **extra}).oidc_console_client_id == "console"


def test_a_forms_refusal_is_shown_at_its_field_or_the_main_one() -> None:
    typed = {"name": "x", "role": "member"}
    role = Form("f", "name", typed, InvalidInput("role must be one of …", field="role"))
    assert role.error("role") == "role must be one of …" and role.error("name") == "" and role.status == 400
    taken = Form("f", "name", typed, Conflict("user t/x already exists"))
    assert taken.error("name") == "user t/x already exists" and taken.status == 409
    elsewhere = Form("f", "name", typed, InvalidInput("bad", field="permission"))  # not a field of this form
    assert elsewhere.error("name") == "bad"
    assert Form("f", "name", typed).error("name") == "" and Form("f", "name").status == 200
