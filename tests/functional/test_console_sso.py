"""The console's OIDC single sign-on (authorization code with PKCE) and RP-initiated logout in
Debian's Chromium, against a private ``gitserver serve`` on SQLite and PostgreSQL and a small
loopback OIDC issuer (tests/functional/oidc_issuer.py: Keycloak cannot run here).

The server hosts three tenants. An ID token names its tenant through the ``tenant`` claim
(``GITSERVER_OIDC_CONSOLE_TENANT_CLAIM``) or through its roles, mapped as the API maps them
(``GITSERVER_OIDC_ROLE_MAP``: ``b-admins=tenant-admin:beta``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from sqlalchemy import select

from gitserver.db import models
from tests.conftest import free_port
from tests.functional.conftest import GitServer, start_server
from tests.functional.console_helpers import AXE, Tab, axe_violations, browser
from tests.functional.oidc_issuer import Issuer

__all__ = ["browser"]

CLIENT_ID = "gitserver-console"
ALPHA, BETA, GAMMA = "alpha", "beta", "gamma"
ROLE_B = "b-admins"


@pytest.fixture()
def sso(db_url: str, git_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[GitServer, Issuer]]:
    with Issuer(free_port(), CLIENT_ID, user="alice") as issuer:
        server = start_server(tmp_path, db_url, git_env, extra_env={
            "GITSERVER_OIDC_ISSUER": issuer.url, "GITSERVER_OIDC_AUDIENCE": "gitserver-api",
            "GITSERVER_OIDC_ROLE_MAP": f"{ROLE_B}=tenant-admin:{BETA}",
            "GITSERVER_OIDC_CONSOLE_CLIENT_ID": CLIENT_ID, "GITSERVER_OIDC_CONSOLE_TENANT_CLAIM": "tenant"})
        try:
            from gitserver.admin import tenants, users

            with server.db() as session:
                alpha, beta = tenants.create_tenant(session, ALPHA), tenants.create_tenant(session, BETA)
                gamma = tenants.create_tenant(session, GAMMA)
                users.create_user(session, alpha, "alice", "member")
                users.create_user(session, beta, "bob", "admin")
                for tenant in (alpha, gamma):
                    users.create_user(session, tenant, "carol", "member")
            yield server, issuer
        finally:
            server.stop()


def _single_sign_on(tab: Tab, server: GitServer) -> None:
    tab.goto(server.http_url + "/ui")
    tab.page.click("text=Sign in with single sign-on")
    tab.page.wait_for_load_state()


def _sign_out(tab: Tab) -> None:
    tab.page.click("header >> text=Sign out")
    tab.page.wait_for_load_state()


def test_users_of_two_tenants_sign_on_and_out_at_the_issuer(sso: tuple[GitServer, Issuer], browser: Any) -> None:
    """alice of alpha (named by the tenant claim) and bob of beta (by a role the API's role map
    makes beta's admin) each sign in to their own tenant and see only its private
    repositories; signing out reaches the issuer's end-session endpoint with the ID token
    they signed in with, and comes back signed out."""
    server, issuer = sso
    secret_a = server.new_repo(ALPHA, "secret-a", grants={"alice": "read"})
    secret_b = server.new_repo(BETA, "secret-b")
    tab = Tab(browser)
    issuer.user, issuer.claims = "alice", {"tenant": ALPHA}
    _single_sign_on(tab, server)
    assert tab.page.url == f"{server.http_url}/ui/{ALPHA}"
    assert f"Signed in as {ALPHA}/alice" in tab.page.inner_text("header")
    assert secret_a in tab.page.inner_text("main")
    tab.goto(f"{server.http_url}/ui/{BETA}/{secret_b}", status=404)
    tab.goto(f"{server.http_url}/ui/{BETA}", status=404)  # nothing public there: as a missing tenant
    alice_token = issuer.issued[-1]
    tab.goto(f"{server.http_url}/ui/{ALPHA}")
    _sign_out(tab)
    logout = [q for path, q in issuer.seen if path == "/logout"]
    assert len(logout) == 1 and logout[0]["id_token_hint"] == alice_token
    assert logout[0]["post_logout_redirect_uri"] == server.http_url + "/ui"
    assert logout[0]["client_id"] == CLIENT_ID
    assert tab.page.url == server.http_url + "/ui"
    assert "Not signed in" in tab.page.inner_text("header")
    with server.db() as session:
        ended = session.scalars(select(models.ConsoleSession.ended_at)).all()
    assert ended and all(e is not None for e in ended)

    issuer.user, issuer.claims = "bob", {"realm_access": {"roles": [ROLE_B, "offline_access"]}}
    _single_sign_on(tab, server)
    assert tab.page.url == f"{server.http_url}/ui/{BETA}"
    assert f"Signed in as {BETA}/bob" in tab.page.inner_text("header")
    assert secret_b in tab.page.inner_text("main") and secret_a not in tab.page.inner_text("main")
    tab.goto(f"{server.http_url}/ui/{ALPHA}/{secret_a}", status=404)
    tab.goto(f"{server.http_url}/ui/{ALPHA}/{secret_a}/tree", status=404)
    tab.goto(f"{server.http_url}/ui/-/admin/{ALPHA}", status=404)
    tab.goto(f"{server.http_url}/ui/-/admin/{BETA}")  # bob is beta's admin (as a gitserver user)
    _sign_out(tab)
    assert len([p for p, _ in issuer.seen if p == "/logout"]) == 2
    assert "Not signed in" in tab.page.inner_text("header")
    assert not tab.errors, tab.errors
    tab.close()


def test_a_user_of_several_tenants_chooses_one(sso: tuple[GitServer, Issuer], browser: Any) -> None:
    server, issuer = sso
    issuer.user, issuer.claims = "carol", {"tenant": [ALPHA, BETA, GAMMA]}  # no carol in beta
    tab = Tab(browser, bypass_csp=True)  # only so axe's script can be injected
    _single_sign_on(tab, server)
    assert "Choose a tenant" in tab.page.inner_text("main")
    if AXE.is_file():
        assert axe_violations(tab.page) == []
    assert not [c for c in tab.context.cookies() if c["name"] == "gitserver_console"]
    choices = tab.page.locator("main li").all_inner_texts()
    assert choices == [ALPHA, GAMMA]
    tab.page.click(f"main >> text={GAMMA}")
    tab.page.wait_for_url(f"{server.http_url}/ui/{GAMMA}")
    assert f"Signed in as {GAMMA}/carol" in tab.page.inner_text("header")
    authorize = [q for path, q in issuer.seen if path == "/authorize"]
    assert len(authorize) == 2  # the second round trip: the issuer sent the browser straight back
    tab.close()
    # Asking for a tenant the token does not name signs nobody in.
    tab = Tab(browser)
    tab.goto(f"{server.http_url}/ui/-/oidc/start?tenant={BETA}", status=403)
    assert "no active user of that name in tenant 'beta'" in tab.page.inner_text("main")
    assert not [c for c in tab.context.cookies() if c["name"] == "gitserver_console"]
    tab.close()


def test_without_an_end_session_endpoint_sign_out_is_local(sso: tuple[GitServer, Issuer], browser: Any) -> None:
    server, issuer = sso
    issuer.end_session = False  # before the console's first discovery
    issuer.claims = {"tenant": ALPHA}
    tab = Tab(browser)
    _single_sign_on(tab, server)
    assert f"Signed in as {ALPHA}/alice" in tab.page.inner_text("header")
    _sign_out(tab)
    assert tab.page.url == server.http_url + "/ui"
    assert "Not signed in" in tab.page.inner_text("header")
    assert not [p for p, _ in issuer.seen if p == "/logout"]
    tab.close()


def test_a_forged_callback_and_an_unknown_user_sign_nobody_in(sso: tuple[GitServer, Issuer],
                                                              browser: Any) -> None:
    server, issuer = sso
    callback = server.http_url + "/ui/-/oidc/callback"
    forged = requests.get(callback + "?code=abc&state=forged", allow_redirects=False, timeout=30)
    assert forged.status_code == 403 and "gitserver_console=" not in forged.headers.get("Set-Cookie", "")
    issuer.user, issuer.claims = "mallory", {"tenant": ALPHA}  # vouched for, but no such user here
    tab = Tab(browser)
    _single_sign_on(tab, server)
    assert "no active user" in tab.page.inner_text("main")
    assert not [c for c in tab.context.cookies() if c["name"] == "gitserver_console"]
    # The issuer's alice, with no tenant claim and no mapped role, names no tenant at all.
    issuer.user, issuer.claims = "alice", {}
    _single_sign_on(tab, server)
    assert "names (none)" in tab.page.inner_text("main")
    assert not [c for c in tab.context.cookies() if c["name"] == "gitserver_console"]
    tab.close()


def test_single_sign_on_with_pkce_and_a_replayed_callback(sso: tuple[GitServer, Issuer], browser: Any) -> None:
    server, issuer = sso
    issuer.claims = {"tenant": ALPHA}
    tab = Tab(browser)
    _single_sign_on(tab, server)
    tab.page.wait_for_url(f"{server.http_url}/ui/{ALPHA}")
    authorize = next(q for path, q in issuer.seen if path == "/authorize")
    token = next(q for path, q in issuer.seen if path == "/token")
    assert authorize["redirect_uri"] == server.http_url + "/ui/-/oidc/callback"
    assert token["code_verifier"] and token["code_verifier"] not in authorize.values()
    assert jwt.decode(issuer.issued[-1], options={"verify_signature": False})["tenant"] == ALPHA
    # The callback again (a replay of the browser's history): the attempt's cookie is gone.
    replay = tab.page.goto(f"{authorize['redirect_uri']}?code=x&state={authorize['state']}")
    assert replay is not None and replay.status == 403
    tab.close()
