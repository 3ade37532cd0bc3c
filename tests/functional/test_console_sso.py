"""The console's OIDC single sign-on (authorization code with PKCE) in Debian's Chromium,
against a private ``gitserver serve`` on SQLite and PostgreSQL and a small loopback OIDC
issuer (tests/functional/oidc_issuer.py: Keycloak cannot run here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gitserver.admin import tenants, users
from tests.conftest import free_port
from tests.functional.conftest import GitServer, start_server
from tests.functional.console_helpers import Tab, browser
from tests.functional.oidc_issuer import Issuer

__all__ = ["browser"]

CLIENT_ID = "gitserver-console"
TENANT = "sso"


@pytest.fixture()
def sso(db_url: str, git_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[GitServer, Issuer]]:
    with Issuer(free_port(), CLIENT_ID, user="alice") as issuer:
        server = start_server(tmp_path, db_url, git_env, extra_env={
            "GITSERVER_OIDC_ISSUER": issuer.url, "GITSERVER_OIDC_AUDIENCE": "gitserver-api",
            "GITSERVER_OIDC_CONSOLE_CLIENT_ID": CLIENT_ID, "GITSERVER_OIDC_CONSOLE_TENANT": TENANT})
        try:
            with server.db() as session:
                users.create_user(session, tenants.create_tenant(session, TENANT), "alice", "member")
            yield server, issuer
        finally:
            server.stop()


def test_single_sign_on_with_pkce(sso: tuple[GitServer, Issuer], browser: Any) -> None:
    server, issuer = sso
    tab = Tab(browser)
    tab.goto(server.http_url + "/ui")
    tab.page.click("text=Sign in with single sign-on")
    tab.page.wait_for_url(f"{server.http_url}/ui/{TENANT}")
    assert f"Signed in as {TENANT}/alice" in tab.page.inner_text("header")
    authorize = next(q for path, q in issuer.seen if path == "/authorize")
    token = next(q for path, q in issuer.seen if path == "/token")
    assert authorize["redirect_uri"] == server.http_url + "/ui/-/oidc/callback"
    assert token["code_verifier"] and token["code_verifier"] not in authorize.values()
    # The callback again (a replay of the browser's history): the attempt's cookie is gone.
    replay = tab.page.goto(f"{authorize['redirect_uri']}?code=x&state={authorize['state']}")
    assert replay is not None and replay.status == 403
    tab.close()


def test_a_forged_callback_and_an_unknown_user_sign_nobody_in(sso: tuple[GitServer, Issuer],
                                                              browser: Any) -> None:
    server, issuer = sso
    callback = server.http_url + "/ui/-/oidc/callback"
    forged = requests.get(callback + "?code=abc&state=forged", allow_redirects=False, timeout=30)
    assert forged.status_code == 403 and "gitserver_console=" not in forged.headers.get("Set-Cookie", "")
    issuer.user = "mallory"  # the issuer vouches for someone this server has no user for
    tab = Tab(browser)
    tab.goto(server.http_url + "/ui")
    tab.page.click("text=Sign in with single sign-on")
    tab.page.wait_for_load_state()
    assert "no active user" in tab.page.inner_text("main")
    assert not [c for c in tab.context.cookies() if c["name"] == "gitserver_console"]
    tab.close()
