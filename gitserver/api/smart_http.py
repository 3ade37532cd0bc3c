"""Read-only smart HTTP for build systems: ``/git/<tenant>/<repo>.git`` (the ``readonly_url``).

``git clone http://host/git/acme/widgets.git`` works with protocols v0, v1 and v2, shallow
clones (``--depth 1 --branch repour-<id>``) and partial clone filters (``--filter=blob:none``).
Pushing is refused: gitserver takes pushes over SSH only, where the protection hooks and the
pusher's identity are in place.

Access: public repositories are readable anonymously; others need an API token, sent as the
password of HTTP Basic auth (what git sends for ``http://x:<token>@host/…`` or from a
credential helper) or as ``Authorization: Bearer``. An anonymous request for anything not
public gets a 401 with a Basic challenge, so git asks for credentials (and a missing repository
looks no different from a private one); once authenticated, a repository the principal cannot
read answers exactly like a missing one (404). Deploy keys are SSH keys and play no part here.

Errors are ``text/plain``: git shows such a body to its user as ``remote: …`` lines, which a
JSON body would not get.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import falcon

from gitserver.api import auth, errors, openapi
from gitserver.api.context import ApiContext, Resource
from gitserver.git import http as githttp
from gitserver.git import packcache
from gitserver.git.store import RECEIVE_PACK, UPLOAD_PACK
from gitserver.net.urls import ssh_clone_url
from gitserver.observe import metrics
from gitserver.policy import access
from gitserver.policy.errors import (
    Forbidden,
    GitserverError,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

PREFIX = "/git/{tenant}/{repo}"
INFO_REFS_ROUTE = PREFIX + "/info/refs"
UPLOAD_PACK_ROUTE = PREFIX + "/" + githttp.UPLOAD_PACK_SERVICE
RECEIVE_PACK_ROUTE = PREFIX + "/" + githttp.RECEIVE_PACK_SERVICE
REALM = "gitserver"
CHALLENGE = f'Basic realm="{REALM}"'
TEXT_PLAIN = "text/plain; charset=utf-8"
# git-http-backend's answer headers: these responses describe the repository at this moment
# and must never be cached by a proxy.
NO_CACHE = {
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
}
ANONYMOUS_REFUSED = "authentication required: use an API token as the password"


@dataclasses.dataclass(frozen=True)
class ReadTarget:
    """A repository the caller may read, resolved to its directory."""

    full_name: str
    path: Path
    public: bool = False


class _Metrics:
    """:class:`gitserver.git.http.TransferObserver` backed by the Prometheus metrics."""

    def started(self) -> None:
        metrics.git_child_started()

    def finished(self) -> None:
        metrics.git_child_finished()

    def transferred(self, direction: str, n: int) -> None:
        metrics.http_git_bytes(direction, n)


def plain_errors(resp: falcon.Response) -> contextlib.AbstractContextManager[None]:
    """Render a :class:`GitserverError` as a plain-text answer git can show its user."""
    return errors.rendered_by(resp, _render_plain, log, "smart HTTP")


def _render_plain(resp: falcon.Response, exc: GitserverError) -> None:
    resp.status = falcon.code_to_http_status(exc.status)
    resp.content_type = TEXT_PLAIN
    resp.text = exc.message + "\n"
    resp.set_headers(NO_CACHE)
    if isinstance(exc, Unauthenticated):
        resp.set_header("WWW-Authenticate", CHALLENGE)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        resp.set_header("Retry-After", str(retry_after))


def authorise_read(ctx: ApiContext, req: falcon.Request, tenant: str, repo: str) -> ReadTarget:
    """The repository if the caller may read it; 401 for anonymous callers otherwise,
    404 (exactly like a missing repository) for authenticated ones. Smart HTTP and the
    bundles (gitserver.api.bundles) share this one decision."""
    with auth.authenticated(ctx.runtime.sessions, req, optional=True) as (session, principal):
        try:
            row = access.authorise(session, principal, tenant, repo, access.READ).repo
        except access.RepoHidden:
            if principal.kind == access.ANONYMOUS.kind:
                raise Unauthenticated(ANONYMOUS_REFUSED) from None
            raise NotFound(f"repository '{tenant}/{repo}' not found or you have no access") from None
        full_name, public = f"{tenant}/{row.name}", row.visibility == "public"
    store = ctx.runtime.store
    if not store.exists(tenant, row.name):
        log.error("repository %s is in the database but not on disk", full_name)
        raise NotFound(f"repository '{full_name}' not found or you have no access")
    return ReadTarget(full_name=full_name, path=store.path(tenant, row.name), public=public)


class _GitResource(Resource):
    def push_refused(self, tenant: str, repo: str) -> Forbidden:
        url = ssh_clone_url(self.ctx.config.ssh_base_url, tenant, repo)
        return Forbidden(f"gitserver accepts pushes over SSH only: {url}")

    def authorise(self, req: falcon.Request, tenant: str, repo: str) -> ReadTarget:
        return authorise_read(self.ctx, req, tenant, repo)

    def start(self, target: ReadTarget, protocol: str | None, *, advertise: bool,
              body: githttp.RequestBody | None, what: str) -> githttp.UploadPackProcess:
        config = self.ctx.config
        metrics.http_git_session(UPLOAD_PACK, "advertise" if advertise else "rpc")
        child = githttp.UploadPackProcess(
            githttp.upload_pack_argv(target.path, config.hooks_dir, advertise=advertise,
                                     pack_cache=packcache.hook_command(config)),
            githttp.upload_pack_env(protocol), target.path, _Metrics(),
            what=f"{target.full_name} ({what})")
        child.start(body)
        return child

    def respond(self, resp: falcon.Response, child: githttp.UploadPackProcess,
                content_type: str, prefix: bytes = b"") -> None:
        """Wait for git's first bytes (errors still become a status), then stream the rest."""
        try:
            first = child.first_chunk()
        except BaseException:
            child.close()
            raise
        resp.status = falcon.HTTP_200
        resp.content_type = content_type
        resp.set_headers(NO_CACHE)
        resp.stream = githttp.StreamingResponse(child, prefix + first)


class InfoRefs(_GitResource):
    """``GET …/info/refs?service=git-upload-pack``: the ref (or v2 capability) advertisement."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with plain_errors(resp):
            service = githttp.service_from_query(req.get_param("service"))
            tenant, repo = githttp.repo_names(tenant, repo)
            if service == RECEIVE_PACK:
                metrics.http_git_session(RECEIVE_PACK, "refused")
                raise self.push_refused(tenant, repo)
            target = self.authorise(req, tenant, repo)
            protocol = githttp.git_protocol(req.get_header("Git-Protocol"))
            child = self.start(target, protocol, advertise=True, body=None, what="ref advertisement")
            self.respond(resp, child, githttp.ADVERTISEMENT_TYPE,
                         githttp.advertisement_prefix(service, protocol))


class UploadPack(_GitResource):
    """``POST …/git-upload-pack``: one stateless negotiation or fetch round."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with plain_errors(resp):
            tenant, repo = githttp.repo_names(tenant, repo)
            target = self.authorise(req, tenant, repo)
            if (req.content_type or "").split(";")[0].strip().lower() != githttp.REQUEST_TYPE:
                raise githttp.UnsupportedMediaType(
                    f"the request body must be {githttp.REQUEST_TYPE}")
            body = githttp.RequestBody(req.stream, content_length=req.content_length,
                                       content_encoding=req.get_header("Content-Encoding"),
                                       limit=self.ctx.config.http_git_max_request_bytes)
            protocol = githttp.git_protocol(req.get_header("Git-Protocol"))
            child = self.start(target, protocol, advertise=False, body=body, what="fetch")
            self.respond(resp, child, githttp.RESULT_TYPE)


class ReceivePack(_GitResource):
    """``POST …/git-receive-pack``: always refused, pointing at the SSH URL."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with plain_errors(resp):
            tenant, repo = githttp.repo_names(tenant, repo)
            metrics.http_git_session(RECEIVE_PACK, "refused")
            raise self.push_refused(tenant, repo)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(INFO_REFS_ROUTE, InfoRefs(ctx))
    app.add_route(UPLOAD_PACK_ROUTE, UploadPack(ctx))
    app.add_route(RECEIVE_PACK_ROUTE, ReceivePack(ctx))


# --- OpenAPI ----------------------------------------------------------------------------------

def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _binary(description: str, content_type: str) -> dict[str, Any]:
    return {"description": description,
            "content": {content_type: {"schema": {"type": "string", "format": "binary"}}}}


_PATH_PARAMETERS = [
    {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "Tenant name."},
    {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "Repository name, with or without a trailing `.git`."},
]
_GIT_PROTOCOL_HEADER = {
    "name": "Git-Protocol", "in": "header", "required": False,
    "schema": {"type": "string", "enum": ["version=0", "version=1", "version=2"]},
    "description": "Wire protocol version the client asks for (other values are ignored).",
}
# Anonymous for public repositories; otherwise a token, as Bearer or as the Basic password.
_READ_SECURITY: list[dict[str, list[str]]] = [{}, {openapi.SECURITY_SCHEME: []}]
_COMMON_ERRORS = {
    "400": _text("Bad repository name, service or request."),
    "401": _text("The repository is not public and no valid token was sent "
                 "(`WWW-Authenticate: Basic`)."),
    "404": _text("No such repository, or the caller cannot read it."),
}

OPENAPI_PATHS: dict[str, Any] = {
    INFO_REFS_ROUTE: {
        "parameters": _PATH_PARAMETERS,
        "get": {
            "operationId": "gitInfoRefs",
            "tags": ["git"],
            "security": _READ_SECURITY,
            "summary": "Smart HTTP ref advertisement (read-only git over HTTP)",
            "parameters": [
                {"name": "service", "in": "query", "required": True,
                 "schema": {"type": "string", "enum": [githttp.UPLOAD_PACK_SERVICE,
                                                       githttp.RECEIVE_PACK_SERVICE]},
                 "description": "`git-upload-pack`; `git-receive-pack` is refused (push over SSH)."},
                _GIT_PROTOCOL_HEADER,
            ],
            "responses": {
                "200": _binary("pkt-line ref advertisement", githttp.ADVERTISEMENT_TYPE),
                **_COMMON_ERRORS,
                "403": _text("Push over HTTP: refused, the message names the SSH URL."),
            },
        },
    },
    UPLOAD_PACK_ROUTE: {
        "parameters": _PATH_PARAMETERS,
        "post": {
            "operationId": "gitUploadPack",
            "tags": ["git"],
            "security": _READ_SECURITY,
            "summary": "Smart HTTP upload-pack (fetch/clone; protocol v0, v1, v2)",
            "parameters": [
                _GIT_PROTOCOL_HEADER,
                {"name": "Content-Encoding", "in": "header", "required": False,
                 "schema": {"type": "string", "enum": ["gzip", "identity"]}},
            ],
            "requestBody": {"required": True, "content": {
                githttp.REQUEST_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": _binary("pkt-line result (acknowledgements and the pack)",
                               githttp.RESULT_TYPE),
                **_COMMON_ERRORS,
                "413": _text("The request body is over the configured limit."),
                "415": _text("Wrong Content-Type or Content-Encoding."),
            },
        },
    },
    RECEIVE_PACK_ROUTE: {
        "parameters": _PATH_PARAMETERS,
        "post": {
            "operationId": "gitReceivePack",
            "tags": ["git"],
            "security": [],
            "summary": "Push over HTTP: always refused (gitserver takes pushes over SSH only)",
            "responses": {
                "400": _text("Bad repository name."),
                "403": _text("Refused; the message names the SSH URL to push to."),
            },
        },
    },
}
