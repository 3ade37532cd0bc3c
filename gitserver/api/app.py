"""The falcon application: ``create_app(runtime, modules)`` builds it from the route modules
the composition root hands it (``gitserver.cmd.wiring``), and ``run_gunicorn`` serves it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import falcon
from sqlalchemy import text

from gitserver import shapes
from gitserver.api import errors as api_errors
from gitserver.api import openapi
from gitserver.api.auth import OidcMiddleware, OperatorMiddleware
from gitserver.api.context import ApiContext, Resource
from gitserver.identity import oidc
from gitserver.policy.access import Principal
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)



class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = openapi.HEALTH.render(status="ok")


class Ready(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            with self.ctx.runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # readiness reports, it does not raise
            log.warning("readiness check: database unreachable", exc_info=True)
            resp.status = falcon.HTTP_503
            resp.media = openapi.HEALTH.render(status="database unreachable")
            return
        resp.media = openapi.HEALTH.render(status="ready")


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(ctx))


def create_app(runtime: Runtime, modules: Sequence[ModuleType], operator: Principal | None = None) -> falcon.App:
    """The app mounting ``modules`` (each with ``add_routes(app, ctx)``), and their OpenAPI document.
    With ``operator``, every request is that principal's, whatever it sends (the CLI's
    in-process API on the data dir; a listening server never gets one)."""
    ctx = ApiContext(runtime=runtime)
    middleware: list[Any] = [OidcMiddleware(oidc.verifier_from_config(runtime.config))]
    if operator is not None:
        middleware.append(OperatorMiddleware(operator))
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=shapes.dumps)
    api_errors.register(app)
    for module in modules:
        module.add_routes(app, ctx)
    # The document of every route module; openapi.py never imports this module (one-way).
    app.add_route(openapi.DOCUMENT_PATH, openapi.OpenApiDocument(modules))
    return app
