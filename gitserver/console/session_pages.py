"""Signing in and out, the start page and a tenant's repositories.

Sign-in is the one-time link of ``ssh git@host login`` (gitserver.identity.weblogin): its GET
opens a session and sets the cookie (HttpOnly, SameSite=Lax, Secure behind TLS); a used,
expired or unknown link gets a page saying so and no cookie. Single sign-on and sign-out
are gitserver.console.sso_pages.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select

from gitserver.console import security
from gitserver.console.web import COOKIE, Page, View
from gitserver.db import models
from gitserver.identity import weblogin
from gitserver.policy import access
from gitserver.policy.errors import NotFound

MAX_LISTED = 200
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


def sign_in(view: View, user: models.User, id_token: str | None = None) -> None:
    """Open a session for ``user`` (``id_token``: a single sign-on's): the cookie, and on to
    their tenant's repositories."""
    opened = weblogin.open_session(view.session, user, id_token=id_token)
    view.resp.set_cookie(COOKIE, opened.secret, max_age=int(weblogin.SESSION_LIFETIME.total_seconds()),
                         path=security.CONSOLE_PREFIX, http_only=True, same_site="Lax",
                         secure=security.cookie_secure(view.ctx.config.public_http_url))
    view.redirect(f"{security.CONSOLE_PREFIX}/{user.tenant.name}")
