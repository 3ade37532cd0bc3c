"""The falcon application: ``create_app(runtime, modules)`` builds it from the route modules
the composition root hands it (``gitserver.cmd.wiring``), and ``run_gunicorn`` serves it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import falcon
from sqlalchemy import text

from gitserver import oidc, shapes
from gitserver.api import errors as api_errors
from gitserver.api import openapi
from gitserver.api.auth import OidcMiddleware
from gitserver.api.context import ApiContext
from gitserver.config import Config
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)



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


def create_app(runtime: Runtime, modules: Sequence[ModuleType]) -> falcon.App:
    """The app mounting ``modules`` (each with ``add_routes(app, ctx)``), and their OpenAPI document."""
    ctx = ApiContext(runtime=runtime)
    app = falcon.App(middleware=[OidcMiddleware(oidc.verifier_from_config(runtime.config))])
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=shapes.dumps)
    api_errors.register(app)
    for module in modules:
        module.add_routes(app, ctx)
    # The document of every route module; openapi.py never imports this module (one-way).
    app.add_route(openapi.DOCUMENT_PATH, openapi.OpenApiDocument(modules))
    return app


def run_gunicorn(config: Config, load: Callable[[], falcon.App]) -> int:
    """Run the API under gunicorn in this process (``gitserver api``); ``load`` builds the app
    in each gunicorn worker."""
    from gunicorn.app.base import BaseApplication

    from gitserver.api.worker import worker_class

    class App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{config.http_host}:{config.http_port}" if ":" not in config.http_host
                         else f"[{config.http_host}]:{config.http_port}")
            self.cfg.set("workers", config.http_workers)
            # gthread, but slow clients hold no thread (gitserver/api/worker.py).
            self.cfg.set("worker_class", worker_class(config.http_header_timeout, config.http_read_timeout))
            self.cfg.set("threads", 8)
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 30)
            self.cfg.set("accesslog", None)
            self.cfg.set("proc_name", "gitserver-api")
            # gunicorn >= 25.1 opens a control socket at one path per user ($HOME/.gunicorn or
            # $XDG_RUNTIME_DIR): every API process of the host would take it from the others
            # and delete it when it stops. gitserver does not use it.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return load()

    App().run()
    return 0
