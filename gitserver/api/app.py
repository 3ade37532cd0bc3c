"""The falcon application: ``create_app(runtime)`` builds it, ``get_app()`` is for gunicorn."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from types import ModuleType
from typing import Any

import falcon
from sqlalchemy import text

from gitserver import oidc
from gitserver.api import errors as api_errors
from gitserver.api import openapi
from gitserver.api.auth import OidcMiddleware
from gitserver.api.context import ApiContext
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)



def route_modules() -> tuple[ModuleType, ...]:
    """The modules that mount routes, each with ``add_routes(app, ctx)`` and its own
    ``OPENAPI_PATHS``/``OPENAPI_SCHEMAS``. Add a module here to mount it."""
    from gitserver.api import smart_http
    from gitserver.api.resources import groups, maintenance, pipelines, repos, tenants, users, webhooks
    from gitserver.api.resources import metrics as metrics_routes
    from gitserver.repour import resources as repour

    return (sys.modules[__name__], metrics_routes, tenants, users, groups, repos, maintenance,
            pipelines, webhooks, smart_http, repour)


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Ready:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            with self.ctx.runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # readiness reports, it does not raise
            log.warning("readiness check: database unreachable", exc_info=True)
            resp.status = falcon.HTTP_503
            resp.media = {"status": "database unreachable"}
            return
        resp.media = {"status": "ready"}


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(ctx))


def _json_default(obj: Any) -> Any:
    """Datetimes as ISO 8601 (``2026-01-01T00:00:00+00:00``), anything else as its str."""
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return str(obj)


def create_app(runtime: Runtime) -> falcon.App:
    ctx = ApiContext(runtime=runtime)
    app = falcon.App(middleware=[OidcMiddleware(oidc.verifier_from_config(runtime.config))])
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=lambda obj: json.dumps(obj, default=_json_default))
    api_errors.register(app)
    modules = route_modules()
    for module in modules:
        module.add_routes(app, ctx)
    # The document of every route module; openapi.py never imports this module (one-way).
    app.add_route(openapi.DOCUMENT_PATH, openapi.OpenApiDocument(modules))
    return app


def get_app() -> Any:
    """The WSGI app for gunicorn (``gitserver.api.app:get_app()``), configured from the environment."""
    from gitserver import config as config_mod
    from gitserver import depwarnings

    depwarnings.quiet()

    return create_app(Runtime.create(config_mod.load()))
