"""The console's routes (``add_routes(app, runtime)``, mounted by gitserver.cmd.wiring on the
API's falcon app) and its static files. Console pages are HTML for people, not API: they are
not in the OpenAPI document.

Paths name the repository, ``/ui/<tenant>/<repo>/…``; the console's own pages live under
``/ui/-/…`` ("-" starts no tenant name, so no tenant can shadow them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon

from gitserver.console import activity_pages, admin_pages, highlight, repo_pages, rule_pages, security, session_pages
from gitserver.console.web import ConsoleContext, template_environment
from gitserver.identity import oidc_login
from gitserver.runtime import Runtime

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
HIGHLIGHT_CSS = "highlight.css"


class Static:
    """The few files in ``static/`` (an allow-list: the names present at start), and the
    Pygments stylesheet."""

    def __init__(self) -> None:
        self.files = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.suffix in _TYPES}
        self.files[HIGHLIGHT_CSS] = highlight.stylesheet().encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        data = self.files.get(name)
        if data is None:
            raise falcon.HTTPNotFound()
        resp.content_type = _TYPES[Path(name).suffix]
        resp.data = data


def add_routes(app: falcon.App, runtime: Runtime) -> None:
    ctx = ConsoleContext(runtime=runtime, templates=template_environment(),
                         sign_on=oidc_login.from_config(runtime.config))
    app.add_middleware(security.HeadersMiddleware())
    ui = security.CONSOLE_PREFIX
    repo = ui + "/{tenant}/{repo}"
    admin = ui + "/-/admin/{tenant}"
    pages: list[tuple[str, Any]] = [
        (ui, session_pages.Home(ctx)),
        (ui + "/-/login/{secret}", session_pages.Login(ctx)),
        (ui + "/-/logout", session_pages.Logout(ctx)),
        (ui + "/-/oidc/start", session_pages.OidcStart(ctx)),
        (ui + "/-/oidc/callback", session_pages.OidcCallback(ctx)),
        (ui + "/-/static/{name}", Static()),
        (ui + "/-/rules/{tenant}", rule_pages.TenantRules(ctx)),
        (admin, admin_pages.TenantAdmin(ctx)),
        (admin + "/users/{user}", admin_pages.UserAdmin(ctx)),
        (admin + "/users/{user}/keys", admin_pages.AddKey(ctx)),
        (admin + "/users/{user}/keys/{key_id:int}/remove", admin_pages.RemoveKey(ctx)),
        (admin + "/users/{user}/tokens/{token_id:int}/revoke", admin_pages.RevokeToken(ctx)),
        (ui + "/{tenant}", session_pages.TenantRepos(ctx)),
        (repo, repo_pages.Summary(ctx)),
        (repo + "/tree", repo_pages.Tree(ctx)),
        (repo + "/blob", repo_pages.File(ctx)),
        (repo + "/raw", repo_pages.Raw(ctx)),
        (repo + "/blame", repo_pages.Blame(ctx)),
        (repo + "/commits", repo_pages.Commits(ctx)),
        (repo + "/commit/{oid}", repo_pages.Commit(ctx)),
        (repo + "/refs", repo_pages.Refs(ctx)),
        (repo + "/pushes", activity_pages.Pushes(ctx)),
        (repo + "/pipelines", activity_pages.Pipelines(ctx)),
        (repo + "/pipelines/{pipeline_id:int}", activity_pages.Pipeline(ctx)),
        (repo + "/pipelines/{pipeline_id:int}/log", activity_pages.PipelineLog(ctx)),
        (repo + "/pipelines/{pipeline_id:int}/cancel", activity_pages.CancelPipeline(ctx)),
        (repo + "/webhooks", activity_pages.Webhooks(ctx)),
        (repo + "/webhooks/deliveries/{delivery_id:int}/redeliver", activity_pages.Redeliver(ctx)),
        (repo + "/rules", rule_pages.RepoRules(ctx)),
        (repo + "/access", admin_pages.RepoAccess(ctx)),
        (repo + "/access/grants", admin_pages.SetGrant(ctx)),
        (repo + "/access/grants/remove", admin_pages.RemoveGrant(ctx)),
    ]
    for path, resource in pages:
        app.add_route(path, resource)
