"""Signing in and out, the start page and a tenant's repositories.

Sign-in is the one-time link of ``ssh git@host login`` (gitserver.identity.weblogin): its GET
opens a session and sets the cookie (HttpOnly, SameSite=Lax, Secure behind TLS); a used,
expired or unknown link gets a page saying so and no cookie. Sign-out is a POST (with the
CSRF token) that ends the session on the server, not only in this browser.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select

from gitserver.console import security
from gitserver.console.web import COOKIE, Page, View
from gitserver.db import models
from gitserver.identity import oidc_login, weblogin
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, NotFound, Unauthenticated

MAX_LISTED = 200
OIDC_COOKIE = "gitserver_oidc"
OIDC_CALLBACK = security.CONSOLE_PREFIX + "/-/oidc/callback"
OIDC_ATTEMPT_SECONDS = 600
MAX_QUERY = 100


class Home(Page):
    """Signed in: your tenant's repositories. Anonymous: the public repositories."""

    def get(self, view: View) -> None:
        if view.principal.tenant_name:
            view.redirect(f"{security.CONSOLE_PREFIX}/{view.principal.tenant_name}")
            return
        query = select(models.Repository).where(models.Repository.visibility == "public")
        view.render("repos.html", tenant=None, **_listing(view, query))


class TenantRepos(Page):
    def get(self, view: View, tenant: str) -> None:
        row = view.session.scalar(select(models.Tenant).where(models.Tenant.name == tenant[:MAX_QUERY]))
        if row is None:
            raise NotFound(f"tenant {tenant[:100]!r} not found")
        if view.principal.is_site_admin or view.principal.tenant_id == row.id:
            query = access.readable_repos(view.principal, row.id)
        else:  # another tenant's public repositories, as git and the API serve them
            query = select(models.Repository).where(models.Repository.tenant_id == row.id,
                                                    models.Repository.visibility == "public")
            if view.session.scalar(query.limit(1)) is None:
                # Nothing public: exactly a missing tenant (no oracle for tenant names).
                raise NotFound(f"tenant {tenant[:100]!r} not found")
        view.render("repos.html", tenant=row, **_listing(view, query))


def _listing(view: View, query: Select[Any]) -> dict[str, Any]:
    """Repositories matching ``?q=`` with the time of their last push."""
    text = view.param("q")[:MAX_QUERY]
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(models.Repository.name.ilike(pattern, escape="\\"),
                                models.Repository.description.ilike(pattern, escape="\\")))
    rows = list(view.session.scalars(query.order_by(models.Repository.name).limit(MAX_LISTED)))
    last = dict(view.session.execute(
        select(models.Push.repo_id, func.max(models.Push.created_at))
        .where(models.Push.repo_id.in_([r.id for r in rows]), models.Push.state.in_(models.LEDGER_STATES))
        .group_by(models.Push.repo_id)).all()) if rows else {}
    return {"repos": rows, "last_push": last, "q": text}


class Login(Page):
    def get(self, view: View, secret: str) -> None:
        user = weblogin.redeem(view.session, secret)
        if user is None:
            view.render("login_failed.html", status=403)
            return
        sign_in(view, user)


def sign_in(view: View, user: models.User) -> None:
    """Open a session for ``user``: the cookie, and on to their tenant's repositories."""
    opened = weblogin.open_session(view.session, user)
    view.resp.set_cookie(COOKIE, opened.secret, max_age=int(weblogin.SESSION_LIFETIME.total_seconds()),
                         path=security.CONSOLE_PREFIX, http_only=True, same_site="Lax",
                         secure=security.cookie_secure(view.ctx.config.public_http_url))
    view.redirect(f"{security.CONSOLE_PREFIX}/{user.tenant.name}")


def _sign_on(view: View) -> oidc_login.ConsoleSignOn:
    if view.ctx.sign_on is None:
        raise NotFound("single sign-on is not configured on this server")
    return view.ctx.sign_on


def _callback_url(view: View) -> str:
    return view.ctx.config.http_base_url + OIDC_CALLBACK


class OidcStart(Page):
    """Off to the issuer, with this attempt's state, nonce and PKCE verifier in a cookie that
    only the callback path receives."""

    def get(self, view: View) -> None:
        attempt = _sign_on(view).begin(_callback_url(view))
        view.resp.set_cookie(OIDC_COOKIE, attempt.cookie(), max_age=OIDC_ATTEMPT_SECONDS, path=OIDC_CALLBACK,
                             http_only=True, same_site="Lax",
                             secure=security.cookie_secure(view.ctx.config.public_http_url))
        view.redirect(attempt.url)


class OidcCallback(Page):
    def get(self, view: View) -> None:
        sign_on = _sign_on(view)
        view.resp.unset_cookie(OIDC_COOKIE, path=OIDC_CALLBACK)  # one use, whatever happens
        if view.param("error"):
            raise Unauthenticated(f"the OIDC issuer did not sign you in: {view.param('error')[:100]}")
        name = sign_on.complete(view.req.cookies.get(OIDC_COOKIE, ""), view.param("state"),
                                view.param("code"), _callback_url(view))
        tenant = view.session.scalar(select(models.Tenant)
                                     .where(models.Tenant.name == view.ctx.config.oidc_console_tenant))
        user = view.session.scalar(select(models.User).where(
            models.User.tenant_id == (tenant.id if tenant else -1), models.User.name == name[:MAX_QUERY]))
        if user is None or user.disabled:
            raise Forbidden(f"signed in as {name[:100]!r}, but there is no active user of that name in "
                            "this server's single sign-on tenant; ask an admin to create it")
        sign_in(view, user)


class Logout(Page):
    def post(self, view: View) -> None:
        if view.browser is not None:
            weblogin.end_session(view.browser)
        view.resp.unset_cookie(COOKIE, path=security.CONSOLE_PREFIX)
        view.redirect(security.CONSOLE_PREFIX)
