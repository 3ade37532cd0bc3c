"""``GET /bundles/<tenant>/<repo>.bundle``: a repository's prebuilt bundle, for
``git clone --bundle-uri`` (gitserver.git.bundles; docs/performance.md, "Clone storms").

The read rule is smart HTTP's, the same function (gitserver.api.smart_http.authorise_read):
public repositories anonymously; others with an API token as the Basic password (or Bearer);
an anonymous caller gets a 401 Basic challenge for anything not public, a caller who cannot
read the repository the same 404 as for a missing one. git 2.39 downloads the bundle in its own
``git remote-http`` process with the bundle URL's credentials only (not the clone URL's), so a
private repository's bundle URL is given as ``http://x:<token>@host/bundles/…`` or its host is
covered by a credential helper.

The answer is the file itself: falcon hands the open file to gunicorn's ``wsgi.file_wrapper``,
which sends it with ``sendfile`` (no Python loop over its bytes).
"""

from __future__ import annotations

import email.utils
import os
from typing import Any

import falcon

from gitserver.api import openapi
from gitserver.api.context import ApiContext, Resource
from gitserver.api.smart_http import TEXT_PLAIN, authorise_read, plain_errors
from gitserver.git import bundles
from gitserver.git import http as githttp
from gitserver.observe import metrics
from gitserver.policy.errors import NotFound

ROUTE = "/bundles/{tenant}/{repo}" + bundles.BUNDLE_SUFFIX
BUNDLE_TYPE = "application/x-git-bundle"
# A bundle is refreshed in place (renamed over), so caches revalidate; a public one may be
# kept by a shared cache (a CDN) for a while: an older bundle only makes the client fetch more.
PUBLIC_CACHE = "public, max-age=300"
PRIVATE_CACHE = "private, no-cache"
NO_BUNDLE = "repository '{name}' has no bundle yet (maintenance or its first push writes one)"


class Bundle(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with plain_errors(resp):
            self._answer(req, resp, tenant, repo, body=True)

    def on_head(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with plain_errors(resp):
            self._answer(req, resp, tenant, repo, body=False)

    def _answer(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                *, body: bool) -> None:
        tenant, repo = githttp.repo_names(tenant, repo)
        target = authorise_read(self.ctx, req, tenant, repo)
        path = bundles.bundle_path(self.ctx.config.bundles_dir, *target.full_name.split("/", 1))
        try:
            fh = open(path, "rb")  # noqa: SIM115  (the response owns it; gunicorn closes it)
        except FileNotFoundError:
            raise NotFound(NO_BUNDLE.format(name=target.full_name)) from None
        st = os.fstat(fh.fileno())
        resp.content_type = BUNDLE_TYPE
        resp.etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        resp.set_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        resp.cache_control = [PUBLIC_CACHE if target.public else PRIVATE_CACHE]
        if not body:
            fh.close()
            resp.content_length = st.st_size
            return
        metrics.bundle_download()
        resp.set_stream(fh, st.st_size)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(ROUTE, Bundle(ctx))


OPENAPI_PATHS: dict[str, Any] = {
    ROUTE: {
        "parameters": [
            {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "Tenant name."},
            {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "Repository name."},
        ],
        "get": {
            "operationId": "getBundle",
            "tags": ["git"],
            "security": [{}, {openapi.SECURITY_SCHEME: []}],
            "summary": "The repository's full bundle, for `git clone --bundle-uri` (its `bundle_url`)",
            "responses": {
                "200": {"description": "a git bundle (v2) of every branch and tag, no prerequisites",
                        "content": {BUNDLE_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
                "400": {"description": "Bad tenant or repository name.",
                        "content": {TEXT_PLAIN: {"schema": {"type": "string"}}}},
                "401": {"description": "The repository is not public and no valid token was sent "
                                       "(`WWW-Authenticate: Basic`)."},
                "404": {"description": "No such repository, the caller cannot read it, or it has "
                                       "no bundle yet.",
                        "content": {TEXT_PLAIN: {"schema": {"type": "string"}}}},
            },
        },
        "head": {
            "operationId": "headBundle",
            "tags": ["git"],
            "security": [{}, {openapi.SECURITY_SCHEME: []}],
            "summary": "The bundle's headers (size, ETag, Last-Modified) without its body",
            "responses": {"200": {"description": "the bundle exists and may be read"},
                          "401": {"description": "not public and no valid token"},
                          "404": {"description": "missing, not readable, or no bundle yet"}},
        },
    },
}
