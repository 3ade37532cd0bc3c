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

from gitserver.console import (
    access_pages,
    activity_pages,
    admin_pages,
    group_pages,
    highlight,
    repo_pages,
    rule_pages,
    security,
    session_pages,
    sso_pages,
)
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


def _pages(ctx: ConsoleContext) -> dict[str, dict[str, Any]]:
    """Each prefix's pages, by the rest of their path."""
    ui = security.CONSOLE_PREFIX
    return {
        ui: {"": session_pages.Home(ctx), "/{tenant}": session_pages.TenantRepos(ctx)},
        ui + "/-": {
            "/login/{secret}": session_pages.Login(ctx), "/logout": sso_pages.Logout(ctx),
            "/oidc/start": sso_pages.OidcStart(ctx), "/oidc/callback": sso_pages.OidcCallback(ctx),
            "/static/{name}": Static(), "/rules/{tenant}": rule_pages.TenantRules(ctx)},
        ui + "/-/admin/{tenant}": {
            "": admin_pages.TenantAdmin(ctx), "/users": admin_pages.CreateUser(ctx),
            "/groups": admin_pages.CreateGroup(ctx), "/groups/{group}": group_pages.GroupAdmin(ctx),
            "/groups/{group}/members": group_pages.AddMember(ctx),
            "/groups/{group}/members/{user}/remove": group_pages.RemoveMember(ctx)},
        ui + "/-/admin/{tenant}/users/{user}": {
            "": admin_pages.UserAdmin(ctx), "/change": admin_pages.ChangeUser(ctx), "/keys": admin_pages.AddKey(ctx),
            "/keys/{item_id:int}/remove": admin_pages.RemoveUserItem(ctx, admin_pages.KEY),
            "/tokens": admin_pages.CreateToken(ctx),
            "/tokens/{item_id:int}/revoke": admin_pages.RemoveUserItem(ctx, admin_pages.TOKEN)},
        ui + "/{tenant}/{repo}": {
            "": repo_pages.Summary(ctx), "/tree": repo_pages.Tree(ctx), "/blob": repo_pages.File(ctx),
            "/raw": repo_pages.Raw(ctx), "/blame": repo_pages.Blame(ctx),
            "/commits": repo_pages.Commits(ctx),
            "/commit/{oid}": repo_pages.Commit(ctx), "/refs": repo_pages.Refs(ctx),
            "/rules": rule_pages.RepoRules(ctx)},
        ui + "/{tenant}/{repo}/pushes": {"": activity_pages.Pushes(ctx)},
        ui + "/{tenant}/{repo}/pipelines": {
            "": activity_pages.Pipelines(ctx), "/{pipeline_id:int}": activity_pages.Pipeline(ctx),
            "/{pipeline_id:int}/log": activity_pages.PipelineLog(ctx),
            "/{pipeline_id:int}/cancel": activity_pages.CancelPipeline(ctx)},
        ui + "/{tenant}/{repo}/webhooks": {
            "": activity_pages.Webhooks(ctx),
            "/deliveries/{delivery_id:int}/redeliver": activity_pages.Redeliver(ctx)},
        ui + "/{tenant}/{repo}/access": {
            "": access_pages.RepoAccess(ctx), "/grants": access_pages.SetGrant(ctx),
            "/grants/remove": access_pages.RemoveGrant(ctx), "/deploy-keys": access_pages.AddDeployKey(ctx),
            "/deploy-keys/{deploy_key_id:int}/remove": access_pages.RemoveDeployKey(ctx)},
    }


def add_routes(app: falcon.App, runtime: Runtime) -> None:
    sign_on = oidc_login.from_config(runtime.config)
    ctx = ConsoleContext(runtime=runtime, templates=template_environment(), sign_on=sign_on)
    # Sign-out may send the browser on to the issuer (RP-initiated logout): its redirect is
    # held to the page's form-action.
    app.add_middleware(security.HeadersMiddleware((sign_on.origin,) if sign_on else ()))
    for prefix, pages in _pages(ctx).items():
        for rest, resource in pages.items():
            app.add_route(prefix + rest, resource)
