"""Single sign-on (OIDC, authorization code with PKCE) and signing out.

``/ui/-/oidc/start`` sends the browser to the issuer with this attempt's state, nonce and PKCE
verifier (and the tenant asked for with ``?tenant=``, if any) in a cookie only the callback
path receives. The callback verifies the ID token (gitserver.identity.oidc_login) and signs
in the user its claim names in one of the tenants the token names (docs/console.md): the one
asked for, or the only one that has an active user of that name; with several, a page lists
them, each starting a sign-in for that tenant (the issuer, already signed in, sends the
browser straight back). Users are never created here.

Sign-out (a POST with the CSRF token) ends the session on the server; a single sign-on's
session then goes on to the issuer's ``end_session_endpoint`` (RP-initiated logout, with
``id_token_hint`` and ``post_logout_redirect_uri``) when the issuer advertises one.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from gitserver.console import security
from gitserver.console.session_pages import sign_in
from gitserver.console.web import COOKIE, Page, View
from gitserver.db import models
from gitserver.identity import oidc_login, weblogin
from gitserver.policy.errors import Forbidden, NotFound, Unauthenticated
from gitserver.policy.names import name_problem

log = logging.getLogger(__name__)

OIDC_COOKIE = "gitserver_oidc"
OIDC_START = security.CONSOLE_PREFIX + "/-/oidc/start"
OIDC_CALLBACK = security.CONSOLE_PREFIX + "/-/oidc/callback"
OIDC_ATTEMPT_SECONDS = 600
MAX_SHOWN = 100


def _sign_on(view: View) -> oidc_login.ConsoleSignOn:
    if view.ctx.sign_on is None:
        raise NotFound("single sign-on is not configured on this server")
    return view.ctx.sign_on


def _callback_url(view: View) -> str:
    return view.ctx.config.http_base_url + OIDC_CALLBACK


class OidcStart(Page):
    """Off to the issuer, with this attempt's state, nonce, PKCE verifier and asked-for tenant
    in a cookie that only the callback path receives."""

    def get(self, view: View) -> None:
        tenant = view.param("tenant")
        if tenant and name_problem(tenant):
            raise NotFound(f"tenant {tenant[:MAX_SHOWN]!r} not found")
        attempt = _sign_on(view).begin(_callback_url(view), tenant)
        view.resp.set_cookie(OIDC_COOKIE, attempt.cookie(), max_age=OIDC_ATTEMPT_SECONDS, path=OIDC_CALLBACK,
                             http_only=True, same_site="Lax",
                             secure=security.cookie_secure(view.ctx.config.public_http_url))
        view.redirect(attempt.url)


def active_users(view: View, signed: oidc_login.SignedOn) -> list[models.User]:
    """The active users named ``signed.user`` in the tenants the token names, in its order."""
    if name_problem(signed.user):
        return []
    found = {user.tenant.name: user for user in view.session.scalars(
        select(models.User).join(models.Tenant, models.Tenant.id == models.User.tenant_id)
        .where(models.Tenant.name.in_(signed.tenants), models.User.name == signed.user,
               models.User.disabled.is_(False)))}
    return [found[name] for name in signed.tenants if name in found]


class OidcCallback(Page):
    def get(self, view: View) -> None:
        sign_on = _sign_on(view)
        view.resp.unset_cookie(OIDC_COOKIE, path=OIDC_CALLBACK)  # one use, whatever happens
        if view.param("error"):
            raise Unauthenticated(f"the OIDC issuer did not sign you in: {view.param('error')[:MAX_SHOWN]}")
        signed = sign_on.complete(view.req.cookies.get(OIDC_COOKIE, ""), view.param("state"),
                                  view.param("code"), _callback_url(view))
        users = active_users(view, signed)
        if signed.chosen:
            users = [u for u in users if u.tenant.name == signed.chosen]
        if not users:
            where = f"tenant {signed.chosen!r}" if signed.chosen else \
                f"the tenants your sign-in names ({', '.join(signed.tenants) or 'none'})"
            raise Forbidden(f"signed in as {signed.user[:MAX_SHOWN]!r}, but there is no active user of that "
                            f"name in {where[:2 * MAX_SHOWN]}; ask an admin to create it")
        if len(users) > 1:
            view.render("sso_choose.html", status=200, name=signed.user, start=OIDC_START,
                        tenants=[u.tenant.name for u in users])
            return
        log.info("console single sign-on: %s/%s signed in", users[0].tenant.name, users[0].name)
        sign_in(view, users[0], id_token=signed.id_token)


class Logout(Page):
    """Ends the session here, then (a single sign-on's, when the issuer can) at the issuer."""

    def post(self, view: View) -> None:
        id_token = view.browser.id_token if view.browser is not None else None
        if view.browser is not None:
            weblogin.end_session(view.browser)
        view.resp.unset_cookie(COOKIE, path=security.CONSOLE_PREFIX)
        home = view.ctx.config.http_base_url + security.CONSOLE_PREFIX
        at_issuer = view.ctx.sign_on.logout_url(id_token, home) if id_token and view.ctx.sign_on else None
        view.redirect(at_issuer or security.CONSOLE_PREFIX)
