"""Git LFS over HTTP: the batch API and the basic transfer's object endpoints.

git-lfs derives ``<clone URL>/info/lfs`` from the remote, so both clone URL forms are served:
``/{tenant}/{repo}.git/info/lfs/…`` and ``/git/{tenant}/{repo}.git/info/lfs/…`` (the
read-only smart HTTP URL). Credentials are smart HTTP's (an API token as the Basic password,
or Bearer; an OIDC JWT), or the ``RemoteAuth`` header of an action href or of
``git-lfs-authenticate`` (gitserver.lfs.tokens). The read rule is the repository's: public
repositories download anonymously; a non-public one without credentials answers 401 with
``LFS-Authenticate`` so git-lfs asks its credential helper; a repository the caller cannot
read answers 404 like a missing one; uploads need ``write`` (403 below it).

Errors are git-lfs's JSON (``{"message"}``, ``application/vnd.git-lfs+json``): git-lfs shows
the message to its user. The decisions are gitserver.lfs.service's; this module only speaks
HTTP. The locks API is gitserver.api.lfs_locks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import falcon
from sqlalchemy.orm import Session

from gitserver.api import auth, errors, openapi, rawbody
from gitserver.api import body as api_body
from gitserver.api.context import ApiContext
from gitserver.db.session import transaction
from gitserver.git import http as githttp
from gitserver.lfs import batch, oids, tokens
from gitserver.lfs.service import LfsService, Target
from gitserver.lfs.tokens import DOWNLOAD, UPLOAD
from gitserver.policy import access
from gitserver.policy.errors import (
    GitserverError,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

PREFIXES = ("/{tenant}/{repo}/info/lfs", "/git/{tenant}/{repo}/info/lfs")
BATCH = "/objects/batch"
OBJECT = "/objects/{oid}"
VERIFY = "/verify"
MEDIA_TYPE = batch.MEDIA_TYPE
CHALLENGE = 'Basic realm="gitserver"'
# A batch or locks request body is a list of ids, never large.
MAX_JSON_BYTES = 2 * 1024 * 1024
CHUNK = 1024 * 1024
# Buffers of an upload, filled by the request thread while the other hashes and writes: an
# upload's memory is these 4 MiB.
BUFFERS = 4
ANONYMOUS_REFUSED = "authentication required: use an API token as the password"


def service(ctx: ApiContext) -> LfsService:
    return ctx.lfs


def lfs_errors(resp: falcon.Response) -> contextlib.AbstractContextManager[None]:
    """A :class:`GitserverError` as git-lfs's JSON error, which the client shows its user (a
    full quota, 507, is the caller's condition, not worth an error line)."""
    return errors.rendered_by(resp, render_error, log, "LFS", quiet=(507,))


def render_error(resp: falcon.Response, exc: GitserverError) -> None:
    resp.status = falcon.code_to_http_status(exc.status)
    resp.content_type = MEDIA_TYPE
    body: dict[str, Any] = {"message": exc.message}
    extra = getattr(exc, "lfs_body", None)
    if extra:
        body.update(extra)
    resp.text = json.dumps(body)
    if isinstance(exc, Unauthenticated):
        resp.set_header("LFS-Authenticate", CHALLENGE)
        resp.set_header("WWW-Authenticate", CHALLENGE)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        resp.set_header("Retry-After", str(retry_after))


def caller(req: falcon.Request, session: Session, lfs: LfsService) -> tuple[access.Principal, tokens.Grant | None]:
    """Who is calling: an LFS token (RemoteAuth), an API token or OIDC JWT, or anonymous."""
    remote = tokens.from_header(req.get_header("Authorization"))
    if remote is not None:
        grant = lfs.principal_for_token(session, remote)
        return grant.principal, grant
    return auth.optional_principal(req, session), None


def authorise(req: falcon.Request, session: Session, lfs: LfsService, tenant: str, repo: str,
              operation: str) -> tuple[Target, tokens.Grant | None]:
    """The repository for ``operation``, worded for git-lfs: 401 anonymous, 404 hidden, 403 too low."""
    tenant, repo = githttp.repo_names(tenant, repo)
    principal, grant = caller(req, session, lfs)
    try:
        return lfs.authorise(session, principal, tenant, repo, operation, grant), grant
    except access.RepoHidden:
        if principal.kind == access.ANONYMOUS.kind:
            raise Unauthenticated(ANONYMOUS_REFUSED) from None
        raise NotFound(f"repository '{tenant}/{repo}' not found or you have no access") from None


def read_json(req: falcon.Request) -> object:
    """The body as JSON (None when empty), parsed as the API parses its bodies: too large,
    not UTF-8, nested too deeply or not JSON are each a 400 naming the body."""
    raw = api_body.read_body(req, MAX_JSON_BYTES)
    if len(raw) > MAX_JSON_BYTES:
        raise InvalidInput(f"the request body is over {MAX_JSON_BYTES} bytes", field=api_body.BODY_FIELD)
    return api_body.loads(raw) if raw else None


def base_url(ctx: ApiContext, req: falcon.Request) -> str:
    """Where action hrefs point: the configured public URL, else the host the client used."""
    return ctx.config.http_base_url if ctx.config.public_http_url else req.prefix


def send_json(resp: falcon.Response, body: dict[str, Any], status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = MEDIA_TYPE
    resp.text = json.dumps(body)


class Batch:
    """``POST …/info/lfs/objects/batch``: which objects to send or fetch, and how."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with lfs_errors(resp):
            request = batch.parse_request(read_json(req))
            lfs = service(self.ctx)
            with transaction(self.ctx.runtime.sessions) as session:
                target, _ = authorise(req, session, lfs, tenant, repo, request.operation)
                outcomes = lfs.batch(session, target, request, base_url(self.ctx, req))
            send_json(resp, batch.answer_json(outcomes))


class Object:
    """``GET``/``PUT …/info/lfs/objects/{oid}``: the basic transfer's download and upload."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, oid: str) -> None:
        with lfs_errors(resp):
            with object_access(self.ctx, req, tenant, repo, oid, DOWNLOAD) as (lfs, session, target, _grant):
                stream, size = lfs.open_object(session, target, oid)
            resp.status = falcon.HTTP_200
            resp.content_type = "application/octet-stream"
            resp.content_length = size
            resp.stream = stream  # a file: gunicorn sends it with sendfile()

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, oid: str) -> None:
        with lfs_errors(resp):
            with object_access(self.ctx, req, tenant, repo, oid, UPLOAD) as (lfs, session, target, grant):
                size = _upload_size(req, grant, oid)
                lfs.check_quota(session, target, 0 if lfs.held(session, target.repo_id, [oid]) else size)
            incoming = lfs.receive(oid, size)
            try:
                _copy_body(req, incoming, size)
                lfs.store_and_record(target, incoming)
            finally:
                incoming.discard()
            resp.status = falcon.HTTP_200
            resp.content_type = MEDIA_TYPE
            resp.text = "{}"


@contextlib.contextmanager
def object_access(ctx: ApiContext, req: falcon.Request, tenant: str, repo: str, oid: str,
                  operation: str) -> Iterator[tuple[LfsService, Session, Target, tokens.Grant | None]]:
    """One object's repository for ``operation``, in one transaction: the id checked, the
    caller authorised, and an object's token held to its object."""
    oids.check_oid(oid)
    lfs = service(ctx)
    with transaction(ctx.runtime.sessions) as session:
        target, grant = authorise(req, session, lfs, tenant, repo, operation)
        _for_object(grant, oid)
        yield lfs, session, target, grant


def _for_object(grant: tokens.Grant | None, oid: str) -> None:
    if grant is not None and grant.oid is not None and grant.oid != oid:
        raise Unauthenticated("this LFS authorization is for another object")


def _upload_size(req: falcon.Request, grant: tokens.Grant | None, oid: str) -> int:
    """The size announced in the batch (the action's token) or, failing that, Content-Length."""
    length = req.content_length
    announced = grant.size if grant is not None and grant.oid == oid else None
    if announced is None:
        if length is None:
            raise InvalidInput("Content-Length is required", field="Content-Length")
        return oids.check_size(length, "Content-Length")
    if length is not None and length != announced:
        raise InvalidInput(f"Content-Length is {length}; the batch announced {announced} bytes",
                           field="Content-Length")
    return announced


def _copy_body(req: falcon.Request, incoming: Any, size: int) -> None:
    """The body into ``incoming``, hashed and written by a second thread while this one reads
    (both release the GIL), so a large upload costs the slower of the two, not their sum. The
    bytes go from the socket into a few buffers allocated once and reused (gitserver.api.rawbody):
    a fresh 1 MiB ``bytes`` per read cost more than hashing it."""
    buffers = [memoryview(bytearray(CHUNK)) for _ in range(BUFFERS)]
    free: queue.Queue[memoryview] = queue.Queue()
    for buffer in buffers:
        free.put(buffer)
    full: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
    failed: list[Exception] = []

    def consume() -> None:
        while (item := full.get()) is not None:
            buffer, count = item
            if not failed:
                # Any error must reach the request thread, which then stops reading; the
                # buffer goes back either way so that it never waits for one.
                try:
                    incoming.write(buffer[:count])
                except Exception as exc:  # noqa: BLE001
                    failed.append(exc)
            free.put(buffer)

    writer = threading.Thread(target=consume, name="lfs-upload", daemon=True)
    writer.start()
    try:
        reader, left = rawbody.reader_for(req), size + 1  # one byte more tells a longer body
        while left > 0 and not failed:
            buffer = free.get()
            count = rawbody.fill(reader, buffer[:min(CHUNK, left)])
            if count == 0:
                break
            left -= count
            full.put((buffer, count))
    finally:
        full.put(None)
        writer.join()
    if failed:
        raise failed[0]


class Verify:
    """``POST …/info/lfs/verify``: the client asks whether its upload arrived whole."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with lfs_errors(resp):
            body = read_json(req)
            if not isinstance(body, dict):
                raise InvalidInput("the verify body must be {oid, size}")
            oid, size = oids.check_oid(body.get("oid")), oids.check_size(body.get("size"))
            with object_access(self.ctx, req, tenant, repo, oid, UPLOAD) as (lfs, session, target, _grant):
                lfs.verify(session, target, oid, size)
            send_json(resp, {})


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    for prefix in PREFIXES:
        app.add_route(prefix + BATCH, Batch(ctx))
        app.add_route(prefix + OBJECT, Object(ctx))
        app.add_route(prefix + VERIFY, Verify(ctx))


# --- OpenAPI ----------------------------------------------------------------------------------

def lfs_json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": schema or {"type": "object"}}}}


PATH_PARAMETERS = [
    {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Tenant name."},
    {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "Repository name, with or without a trailing `.git`."},
]
# Anonymous for public repositories; otherwise a token (Basic password or Bearer) or RemoteAuth.
SECURITY: list[dict[str, list[str]]] = [{}, {openapi.SECURITY_SCHEME: []}]
_ERROR = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
ERRORS = {
    "400": lfs_json("Bad request (the message names the field).", _ERROR),
    "401": lfs_json("The repository is not public and no valid credentials were sent "
                    "(`LFS-Authenticate: Basic`).", _ERROR),
    "403": lfs_json("Readable, but the caller may not write.", _ERROR),
    "404": lfs_json("No such repository (or object), or the caller cannot read it.", _ERROR),
}
_POINTER = {"type": "object", "required": ["oid", "size"],
            "properties": {"oid": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "size": {"type": "integer", "minimum": 0}}}
_BATCH_REQUEST = {"type": "object", "required": ["operation", "objects"], "properties": {
    "operation": {"type": "string", "enum": ["upload", "download"]},
    "transfers": {"type": "array", "items": {"type": "string"}},
    "ref": {"type": "object", "properties": {"name": {"type": "string"}}},
    "objects": {"type": "array", "items": _POINTER, "maxItems": batch.MAX_OBJECTS},
    "hash_algo": {"type": "string", "enum": ["sha256"]}}}
_BATCH_ANSWER = {"type": "object", "required": ["transfer", "objects"], "properties": {
    "transfer": {"type": "string"}, "hash_algo": {"type": "string"},
    "objects": {"type": "array", "items": {"type": "object", "properties": {
        "oid": {"type": "string"}, "size": {"type": "integer"}, "authenticated": {"type": "boolean"},
        "actions": {"type": "object"},
        "error": {"type": "object", "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}}}}}}


def _paths(prefix: str, suffix: str) -> dict[str, Any]:
    git = prefix.startswith("/git/")
    op = "lfsGit" if git else "lfs"
    oid = {"name": "oid", "in": "path", "required": True, "schema": {"type": "string"}, "description": "SHA-256."}
    if suffix == BATCH:
        return {"parameters": PATH_PARAMETERS, "post": {
            "operationId": op + "Batch", "tags": ["lfs"], "security": SECURITY,
            "summary": "Git LFS batch API (basic transfer): upload or download actions per object",
            "requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": _BATCH_REQUEST}}},
            "responses": {"200": lfs_json("Each object's actions, or its error.", _BATCH_ANSWER), **ERRORS,
                          "507": lfs_json("The upload would exceed the repository's or tenant's quota.", _ERROR)}}}
    if suffix == OBJECT:
        return {"parameters": [*PATH_PARAMETERS, oid], "get": {
            "operationId": op + "Download", "tags": ["lfs"], "security": SECURITY,
            "summary": "Download an LFS object (an action href of the batch answer)",
            "responses": {"200": {"description": "The object's bytes.", "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS}},
            "put": {
            "operationId": op + "Upload", "tags": ["lfs"], "security": SECURITY,
            "summary": "Upload an LFS object; its SHA-256 and size are checked, a mismatch keeps nothing",
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": lfs_json("Stored."), **ERRORS,
                          "413": lfs_json("Over GITSERVER_LFS_MAX_OBJECT_BYTES.", _ERROR),
                          "422": lfs_json("The content's SHA-256 or size is not the object's.", _ERROR),
                          "507": lfs_json("Over the repository's or tenant's quota.", _ERROR)}}}
    return {"parameters": PATH_PARAMETERS, "post": {
        "operationId": op + "Verify", "tags": ["lfs"], "security": SECURITY,
        "summary": "Verify an uploaded LFS object (the batch answer's verify action)",
        "requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": _POINTER}}},
        "responses": {"200": lfs_json("The repository holds the object."), **ERRORS}}}


OPENAPI_PATHS: dict[str, Any] = {prefix + suffix: _paths(prefix, suffix)
                                 for prefix in PREFIXES for suffix in (BATCH, OBJECT, VERIFY)}
