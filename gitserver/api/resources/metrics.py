"""``GET /metrics`` (Prometheus) and the middleware that times every request."""

from __future__ import annotations

import time
from typing import Any

import falcon

from gitserver.api.context import ApiContext, Resource
from gitserver.observe import metrics

# The methods counted by name; any other is "other". Clients choose the method string, and
# every distinct label value is a series the registry keeps forever: unbounded, it would let
# anyone grow this process's memory (and every scrape) one made-up method at a time.
KNOWN_METHODS = frozenset(falcon.COMBINED_METHODS)
OTHER_METHOD = "other"


class Metrics(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, content_type = metrics.exposition(self.ctx.runtime.engine, self.ctx.config.effective_pack_cache_dir)
        resp.content_type = content_type
        resp.data = body


class MetricsMiddleware:
    """Counts and times each response by route template (``/api/v1/repos/{tenant}/...``)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_start = time.monotonic()

    def process_response(self, req: falcon.Request, resp: falcon.Response,
                         resource: Any, req_succeeded: bool) -> None:
        start = getattr(req.context, "metrics_start", None)
        if start is None:
            return
        route = req.uri_template or "unmatched"
        method = req.method if req.method in KNOWN_METHODS else OTHER_METHOD
        metrics.http_request(route, method, resp.status_code,
                             time.monotonic() - start)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    metrics.setup(ctx.config)
    app.add_route("/metrics", Metrics(ctx))
    app.add_middleware(MetricsMiddleware())
