"""What every console page shares: who the browser is, rendering, and the one error page.

A page is a :class:`Page` subclass with ``get`` (and ``post``) taking a :class:`View`: the
database session of this request (one transaction, committed when the page returns
normally), the principal (anonymous, or the signed-in user), and a ``render`` that fills
the page's template. A domain error (404 for a hidden repository, 403, 400) becomes the
error page with its status; a POST without this session's CSRF token is 403 before the page
runs, so nothing changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import falcon
import jinja2
from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.console import security
from gitserver.console.prepare import Prepared
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.identity import oidc_login, weblogin
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, GitserverError, PayloadTooLarge, is_database_unreachable
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

COOKIE = "gitserver_console"
MAX_FORM_BYTES = 64 * 1024
HTML = "text/html; charset=utf-8"
TEMPLATES = Path(__file__).resolve().parent / "templates"
_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Refused", 409: "Conflict",
           410: "Gone", 500: "Server error", 503: "Unavailable"}


def template_environment() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template: pushed text is data, never markup."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["short"] = lambda oid: str(oid or "")[:12]
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""
    env.filters["epoch"] = lambda s: dt.datetime.fromtimestamp(s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env


@dataclasses.dataclass
class ConsoleContext:
    """Built once per process by :func:`gitserver.console.routes.add_routes`."""

    runtime: Runtime
    templates: jinja2.Environment
    sign_on: oidc_login.ConsoleSignOn | None = None
    # Highlighted files, rendered Markdown and blame, made once on a background thread.
    prepared: Prepared = dataclasses.field(default_factory=Prepared)

    @property
    def config(self) -> Config:
        return self.runtime.config


@dataclasses.dataclass
class View:
    """One request to one page."""

    ctx: ConsoleContext
    req: falcon.Request
    resp: falcon.Response
    session: Session
    principal: access.Principal
    browser: models.ConsoleSession | None

    @property
    def signed_in(self) -> bool:
        return self.browser is not None

    @property
    def csrf_token(self) -> str:
        return self.browser.csrf_token if self.browser else ""

    def render(self, template: str, status: int = 200, **values: Any) -> None:
        self.resp.status = falcon.code_to_http_status(status)
        self.resp.content_type = HTML
        self.resp.text = self.ctx.templates.get_template(template).render(
            principal=self.principal, signed_in=self.signed_in, csrf_field=security.CSRF_FIELD,
            csrf_token=self.csrf_token, sso=self.ctx.sign_on is not None, **values)

    def redirect(self, location: str) -> None:
        """See-other after a form (the browser GETs ``location``, a reload posts nothing)."""
        self.resp.status = falcon.HTTP_303
        self.resp.location = location

    def form(self, name: str) -> str:
        """A field of the POSTed form (``""`` when absent or repeated)."""
        value = read_form(self.req).get(name, "")
        return value if isinstance(value, str) else ""

    def form_all(self, name: str) -> list[str]:
        """Every value of a repeated field of the POSTed form (checkboxes of one name)."""
        value = read_form(self.req).get(name, [])
        return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]

    def param(self, name: str, default: str = "") -> str:
        """A query parameter (``default`` when absent or repeated)."""
        value = self.req.get_param(name)
        return value if isinstance(value, str) else default


def read_form(req: falcon.Request) -> dict[str, Any]:
    """The urlencoded form of a POST, at most :data:`MAX_FORM_BYTES` (a key line is the
    largest field any console form has)."""
    cached = getattr(req.context, "console_form", None)
    if cached is not None:
        return cached
    form: dict[str, Any] = {}
    if req.method == "POST" and (req.content_type or "").startswith(falcon.MEDIA_URLENCODED):
        if (req.content_length or 0) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"a console form is at most {MAX_FORM_BYTES} bytes")
        form = dict(req.get_media(default_when_empty={}))
    req.context.console_form = form
    return form


def browser_session(session: Session, req: falcon.Request) -> models.ConsoleSession | None:
    secret = req.cookies.get(COOKIE)
    return weblogin.find_session(session, secret) if secret else None


def principal_of(row: models.ConsoleSession | None) -> access.Principal:
    return access.principal_for_user(row.user) if row is not None else access.ANONYMOUS


class Page:
    """A console page. Subclasses define ``get(view, **params)`` and/or ``post``; falcon sees
    only the responders a page has (any other method: 405)."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method in ("get", "post"):
            if hasattr(cls, method):
                setattr(cls, f"on_{method}", _responder(method))

    def _serve(self, req: falcon.Request, resp: falcon.Response, method: str, params: dict[str, Any]) -> None:
        handler = getattr(self, method)
        shown: dict[str, Any] = {}  # who the error page says is signed in (plain values)
        try:
            with transaction(self.ctx.runtime.sessions) as session:
                row = browser_session(session, req)
                view = View(self.ctx, req, resp, session, principal_of(row), row)
                shown = {"principal": view.principal, "signed_in": view.signed_in, "csrf_token": view.csrf_token}
                if method == "post":
                    check_csrf(view)
                handler(view, **params)
        except GitserverError as exc:
            self._error(resp, exc.status, exc.message, shown)
        except Exception as exc:
            if is_database_unreachable(exc):
                log.warning("console page failed: database unreachable")
                self._error(resp, 503, "the database is unreachable; try again in a moment", shown)
                return
            log.exception("console page %s %s failed", req.method, req.path)
            self._error(resp, 500, "internal error; the administrator can find it in the log", shown)

    def _error(self, resp: falcon.Response, status: int, message: str, shown: dict[str, Any]) -> None:
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = HTML
        resp.location = None
        values = {"principal": access.ANONYMOUS, "signed_in": False, "csrf_token": "", **shown}
        resp.text = self.ctx.templates.get_template("error.html").render(
            csrf_field=security.CSRF_FIELD, sso=self.ctx.sign_on is not None, status=status,
            title=_TITLES.get(status, "Error"), message=message, **values)


def _responder(method: str) -> Any:
    def responder(self: Page, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        self._serve(req, resp, method, params)
    return responder


def check_csrf(view: View) -> None:
    """Every console POST carries the session's token as a form field; without a session or
    with any other token it is refused before anything is read or written."""
    if view.browser is None or not weblogin.csrf_matches(view.browser, view.form(security.CSRF_FIELD)):
        raise Forbidden("the form's CSRF token is missing or does not match your session; "
                        "reload the page and try again")
