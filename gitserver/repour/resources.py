"""Repour-compatible endpoints at the root of the HTTP API.

A build system that talks to Repour switches its base URL to gitserver and keeps working: the
paths, request bodies, answers and error bodies are Repour's (project-ncl/repour,
``server/endpoint``):

* a body that is not JSON → 400 ``[{"error_message": "expected json", "error_type":
  "json parsability", "path": []}]``;
* a body that breaks the schema → 400, a list of ``{"error_message", "error_type", "path"}``
  (plus voluptuous's ``_error_message`` and ``_path``, which is what Repour really sends);
* a processing error → 400 ``{"desc", "cmd", "exit_code", "stderr", "error_type",
  "error_traceback"}`` (``exit_code`` 10 for the caller's errors: missing ref, unreachable
  origin, refused push; ``error_traceback`` a reference in the server log);
* anything unexpected → 500 with a log reference, never internals.

These routes therefore catch their errors here instead of leaving them to the generic JSON
error handler, whose ``{"title", "description"}`` shape Repour clients do not read.

Work endpoints (/clone, /adjust, /internal-scm, /cancel) need a bearer token (an API token,
or PNC's OIDC JWT); the caller must hold write on the target repository (tenant admin for
/internal-scm). ``/``, ``/version`` and /git-external-to-internal are open, as in Repour. With
``callback`` (or ``positiveCallback`` + ``negativeCallback``) the answer is 202
``{"callback": {"id"}}`` at once and the result goes to the callback URL later (the work runs
as a durable job).

The same routes answer Reqour's spelling of each request (pnc-api ``reqour.dto``, see
:mod:`gitserver.repour.reqour`), and ``POST /cancel`` Reqour's cancel. docs/pnc.md compares
the two faces field by field.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import falcon
from sqlalchemy.orm import Session

from gitserver.api import auth, lookup
from gitserver.api.body import json_schema
from gitserver.api.context import ApiContext
from gitserver.api.response import schemas
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.observe import metrics
from gitserver.observe import version as installed
from gitserver.policy import access
from gitserver.policy.errors import GitserverError, TooManyRequests, database_unavailable, is_database_unreachable
from gitserver.repour import answers, callbacks, giturl, gitwork, inline, internal_scm, job, records, reqour, results
from gitserver.repour.command import USER_ERROR_EXIT_CODE, ProcessingError
from gitserver.repour.records import RepourOp
from gitserver.repour.schema import (
    ADJUST_SCHEMA,
    CLONE_SCHEMA,
    EXTERNAL_TO_INTERNAL_SCHEMA,
    INTERNAL_SCM_SCHEMA,
    REQOUR_CANCEL_SCHEMA,
    Reply,
    Schema,
    error,
    read_body,
    read_request,
)
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

PRODUCT_NAME = "gitserver"


# --- request/response plumbing (the bodies themselves: repour/schema.py) -------------------------


def domain_error_body(exc: GitserverError) -> dict[str, Any]:
    """A gitserver error (401, 403, 404, 409…) in Repour's processing-error shape."""
    return {"desc": exc.message, "cmd": [], "exit_code": USER_ERROR_EXIT_CODE,
            "stderr": "", "error_type": exc.code, "error_traceback": uuid.uuid4().hex}


def respond(req: falcon.Request, resp: falcon.Response, work: Callable[[], tuple[int, Any]]) -> None:
    """Run ``work`` and write its (status, body); every error becomes Repour's shape here."""
    try:
        status, body = work()
    except Reply as reply:
        status, body = reply.status, reply.body
    except ProcessingError as exc:
        status, body = 400, results.described_error_body(exc)
        log.info("%s %s failed: %s (reference %s)", req.method, req.path, exc.desc, body["error_traceback"])
    except GitserverError as exc:
        status, body = _domain_reply(resp, exc)
    except Exception as exc:  # noqa: BLE001  (an outage, or a bug logged in _unexpected)
        if is_database_unreachable(exc):  # an outage, not a bug: 503 and when to retry
            log.warning("%s %s: database unreachable: %s", req.method, req.path, exc.__class__.__name__)
            status, body = _domain_reply(resp, database_unavailable())
        else:
            status, body = _unexpected(req, exc)
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body, ensure_ascii=False)


def _domain_reply(resp: falcon.Response, exc: GitserverError) -> tuple[int, Any]:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:  # TooManyRequests, or Unavailable during a database outage
        resp.set_header("Retry-After", str(retry_after))
    return exc.status, domain_error_body(exc)


def _unexpected(req: falcon.Request, exc: Exception) -> tuple[int, Any]:
    """A bug: logged with its traceback under a reference the client gets, nothing more."""
    reference = uuid.uuid4().hex
    log.error("%s %s failed unexpectedly (reference %s)", req.method, req.path, reference, exc_info=exc)
    return 500, results.internal_error_body(reference)


def actor_of(principal: access.Principal, req: falcon.Request) -> gitwork.Actor:
    return gitwork.Actor(user_id=principal.user_id, user_name=principal.display,
                        client_address=req.remote_addr or "")


def target_repo(session: Session, principal: access.Principal, url: str) -> models.Repository:
    """The internal repository ``url`` names, which the caller may write (404 as if missing
    when it cannot see it, 403 when it can only read it)."""
    try:
        tenant, name = giturl.internal_repo_name(url)
    except ValueError as exc:
        raise ProcessingError(f"not an internal repository URL: {exc}",
                                     error_type="RepoNotFound") from exc
    return access.authorise(session, principal, tenant, name, access.WRITE).repo


def caller(runtime: Runtime, req: falcon.Request) -> access.Principal:
    """Who sent ``req``, read in a transaction of its own: the work that follows opens its own."""
    with transaction(runtime.sessions) as session:
        return auth.authenticate(req, session)


def cancel_writable(session: Session, principal: access.Principal, task_id: str) -> int:
    """Cancel the unfinished tasks ``task_id`` names in repositories ``principal`` may write."""
    return records.cancel_task(session, task_id, lambda repo: access.allows(session, principal, repo, access.WRITE))


# --- resources ---------------------------------------------------------------------------------------

class PostResource:
    """A POST endpoint whose answer is what :meth:`work` returns, worded by :func:`respond`."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond(req, resp, lambda: self.work(req))

    def work(self, req: falcon.Request) -> tuple[int, Any]:
        raise NotImplementedError


class Info:
    """``GET /``: Repour's information page."""

    def __init__(self, version: dict[str, Any]) -> None:
        self.version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = (f"<h1>{PRODUCT_NAME} (Repour-compatible API)</h1>\n<ul>\n"
                     f"    <li><strong>Version</strong> {html.escape(self.version['version'])}</li>\n"
                     f"    <li><strong>Commit Hash</strong> {html.escape(self.version['commit'])}</li>\n</ul>\n")


class Version:
    """``GET /version``: ``{"name", "version", "commit", "builtOn", "components"}``."""

    def __init__(self, version: dict[str, Any]) -> None:
        self.version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Like Repour: PNC's web UI reads the version from the browser.
        resp.set_header("Access-Control-Allow-Origin", "*")
        resp.media = self.version


class ExternalToInternal:
    """``POST /git-external-to-internal``: URL translation only, no lookup, no auth."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        def work() -> tuple[int, Any]:
            spec, face = read_request(req, EXTERNAL_TO_INTERNAL_SCHEMA, RepourOp.EXTERNAL_TO_INTERNAL)
            try:
                internal = giturl.external_to_internal(spec["external_url"], self.ctx.config.ssh_base_url,
                                                       self.ctx.config.repour_default_tenant)
            except ValueError as exc:
                metrics.json_invalid(req.uri_template or req.path)
                raise Reply(400, [error(str(exc), ["external_url"])]) from exc
            if face == reqour.FACE:
                return 200, {"externalUrl": spec["external_url"], "internalUrl": internal}
            return 200, answers.EXTERNAL_TO_INTERNAL.render(external_url=spec["external_url"], internal_url=internal)

        respond(req, resp, work)


class SyncSlots:
    """How many synchronous /clone and /adjust runs this API process serves at once: each
    holds a request thread for up to its timeout, and a few of them must not take every
    thread. Shared by both routes."""

    RETRY_AFTER = 30  # seconds

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit) if limit > 0 else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One slot for the duration of the block, or :class:`TooManyRequests` at once."""
        if self._free is None or not self._free.acquire(blocking=False):
            raise TooManyRequests(
                f"{self.limit} synchronous /clone and /adjust runs are already running here; retry "
                "later, or pass a callback to run the request in the background",
                retry_after=self.RETRY_AFTER)
        try:
            yield
        finally:
            self._free.release()


class Operation(PostResource):
    """``POST /clone`` and ``POST /adjust``: inline, or queued with a callback."""

    def __init__(self, ctx: ApiContext, op_name: str, check: Schema, target_url: Callable[[dict[str, Any]], str],
                 slots: SyncSlots) -> None:
        super().__init__(ctx)
        self.op_name = op_name
        self.check = check
        self.target_url = target_url
        self.slots = slots

    def work(self, req: falcon.Request) -> tuple[int, Any]:
        runtime = self.ctx.runtime
        principal = caller(runtime, req)
        spec, face = read_request(req, self.check, self.op_name)
        if face == reqour.FACE and not callbacks.is_callback_mode(spec):
            raise Reply(400, [error("Reqour's requests need a callback", ["callback"], "required key")])
        actor = actor_of(principal, req)
        context = callbacks.request_context(req.headers)
        if callbacks.is_callback_mode(spec):
            with transaction(runtime.sessions) as session:
                repo = target_repo(session, principal, self.target_url(spec))
                callback_id, pipeline = job.enqueue_operation(
                    session, op_name=self.op_name, spec=spec, actor=actor, repo_id=repo.id, context=context,
                    face=face)
            log.info("repour %s queued as pipeline %s (callback %s) %s", self.op_name, pipeline.id, callback_id,
                     callbacks.context_text(context))
            return 202, answers.callback_accepted(callback_id)
        with self.slots.hold():
            with transaction(runtime.sessions) as session:
                repo = target_repo(session, principal, self.target_url(spec))
                # Inline, under a lease this process holds from the same commit on: if the
                # process dies mid-request, a worker takes the job over and ends the pipeline.
                pipeline = records.create_pipeline(session, kind=self.op_name, repo_id=repo.id, spec=spec,
                                                  status=models.RUNNING)
                if context:
                    log.info("repour %s runs as pipeline %s %s", self.op_name, pipeline.id,
                             callbacks.context_text(context))
                claim = inline.hold_inline(session, runtime.config, op_name=self.op_name,
                                           pipeline_id=pipeline.id)
            return inline.run_inline(runtime, self.op_name, spec, actor, claim)


class InternalScm(PostResource):
    """``POST /internal-scm``: create ``<tenant>/<repo>``; owner groups get admin on it.

    As PNC calls it (``{"project": "project-ncl/dingrogu", "owner_groups": ["ldap/jboss-prod"],
    "parent_project": "jboss-prod-permissions"}``): a missing organisation (tenant) is created
    when the caller may create tenants (site admins), a project without one goes to
    ``repour_default_tenant``, and the repository gets ``repour_internal_scm_visibility``
    (public by default: PNC's builders clone the read-only URL anonymously)."""

    def work(self, req: falcon.Request) -> tuple[int, Any]:
        runtime = self.ctx.runtime
        principal = caller(runtime, req)
        spec, face = read_request(req, INTERNAL_SCM_SCHEMA, RepourOp.INTERNAL_SCM)
        tenant_name, repo_name = internal_scm.parse_project(spec["project"], runtime.config.repour_default_tenant)
        groups = [internal_scm.parse_owner_group(g, i) for i, g in enumerate(spec["owner_groups"])]
        with transaction(runtime.sessions) as session:
            internal_scm.ensure_tenant(session, principal, tenant_name)
            tenant = lookup.visible_tenant(session, principal, tenant_name, admin=True)
            started = time.monotonic()
            status, body = 200, internal_scm.create_internal_repo(
                session, runtime, tenant, repo_name, groups, description=spec.get("description") or "",
                parent_project=spec.get("parent_project"), visibility=runtime.config.repour_internal_scm_visibility)
            metrics.repour_operation(RepourOp.INTERNAL_SCM, str(status), time.monotonic() - started)
            if callbacks.is_callback_mode(spec):
                callback_id = callbacks.new_callback_id()
                callbacks.enqueue_callback(session, runtime.config, spec, status, body, callback_id, None,
                                        context=callbacks.request_context(req.headers), face=face,
                                        op_name=RepourOp.INTERNAL_SCM)
                return 202, answers.callback_accepted(callback_id)
        return status, body


class Cancel:
    """``POST /cancel/{task_id}``: 200 ``[{"message"}]``, 400 ``[{"error_message"}]`` when no
    unfinished task the caller may cancel carries that id."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        respond(req, resp, lambda: self._work(req, task_id))

    def _work(self, req: falcon.Request, task_id: str) -> tuple[int, Any]:
        principal = caller(self.ctx.runtime, req)
        with transaction(self.ctx.runtime.sessions) as session:
            count = cancel_writable(session, principal, task_id)
        if not count:
            return 400, [{"error_message": f"task id {task_id} not found!"}]
        return 200, [{"message": f"Tasks with task_id: {task_id} cancelled"}]


class ReqourCancel(PostResource):
    """``POST /cancel`` with Reqour's ``{"taskId", "callback"}``: 202, then pnc-api's
    ``CancelResponse`` to the callback (when it is a POST or PUT one: dingrogu sends a GET it
    does not care about), SUCCESS when something was cancelled, FAILED otherwise."""

    def work(self, req: falcon.Request) -> tuple[int, Any]:
        runtime = self.ctx.runtime
        principal = caller(runtime, req)
        spec = read_body(req, REQOUR_CANCEL_SCHEMA)
        with transaction(runtime.sessions) as session:
            count = cancel_writable(session, principal, spec["taskId"])
            callback = spec.get("callback")
            if isinstance(callback, dict) and str(callback.get("method") or "POST") in ("POST", "PUT"):
                status = 200 if count else 400
                body = {} if count else {"desc": f"task id {spec['taskId']} not found"}
                callbacks.enqueue_callback(session, runtime.config, {"callback": callback, "taskId": spec["taskId"]},
                                        status, body, callbacks.new_callback_id(), None,
                                        context=callbacks.request_context(req.headers), face=reqour.FACE,
                                        op_name=RepourOp.CANCEL)
        return 202, {}


# --- version ----------------------------------------------------------------------------------------

def version_info() -> dict[str, Any]:
    """Name, version and the commit the package was built from (``Unknown`` when not recorded)."""
    return answers.VERSION.render(name=PRODUCT_NAME, version=installed.version(),
                                  commit=installed.commit() or "Unknown", builtOn=None, components=[])


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    version = version_info()
    app.add_route("/", Info(version))
    app.add_route("/version", Version(version))
    app.add_route("/git-external-to-internal", ExternalToInternal(ctx))
    app.add_route("/external-to-internal", ExternalToInternal(ctx))
    slots = SyncSlots(ctx.config.repour_max_sync_runs)
    app.add_route("/clone", Operation(ctx, RepourOp.CLONE, CLONE_SCHEMA, lambda spec: spec["targetRepoUrl"], slots))
    app.add_route("/adjust", Operation(ctx, RepourOp.ADJUST, ADJUST_SCHEMA,
                                       lambda spec: spec["internal_url"]["readwrite"], slots))
    app.add_route("/internal-scm", InternalScm(ctx))
    app.add_route("/cancel/{task_id}", Cancel(ctx))
    app.add_route("/cancel", ReqourCancel(ctx))


# --- OpenAPI ---------------------------------------------------------------------------------------

def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


_ERRORS = {
    "400": {"description": "Not JSON, a schema violation (list), or a processing error (object)",
            "content": _json("RepourError")},
    "401": {"description": "No API token, or a bad one", "content": _json("RepourError")},
    "403": {"description": "Not allowed", "content": _json("RepourError")},
    "404": {"description": "Missing, or hidden from the caller", "content": _json("RepourError")},
    "413": {"description": "Body too large", "content": _json("RepourError")},
    "500": {"description": "Unexpected failure (a log reference only)", "content": _json("RepourError")},
    "503": {"description": "A synchronous request lost its lease (this API process stalled and a worker "
                           "took it over): send it again", "content": _json("RepourError")},
    "429": {"description": "Too many synchronous runs in this API process (GITSERVER_REPOUR_MAX_SYNC_RUNS): "
                           "retry after Retry-After seconds, or use callback mode", "content": _json("RepourError")},
}
# /clone and /adjust run under a lease when synchronous (503 when it was lost), a few at once (429).
_OPERATION_ERRORS = ("400", "401", "403", "404", "413", "429", "500", "503")
_ACCEPTED = {"description": "Callback mode: the result will be sent to the callback URL",
             "content": _json("RepourCallbackAccepted")}


def _work_op(operation_id: str, summary: str, body_schema: str, result_schema: str,
             errors: tuple[str, ...] = ("400", "401", "403", "404", "413", "500")) -> dict[str, Any]:
    return {"post": {
        "operationId": operation_id, "summary": summary, "tags": ["repour"],
        "requestBody": {"required": True, "content": _json(body_schema)},
        "responses": {"200": {"description": "Done", "content": _json(result_schema)},
                      "202": _ACCEPTED, **{k: _ERRORS[k] for k in errors}},
    }}


_EXTERNAL = {"post": {
    "operationId": "repourExternalToInternal", "summary": "Translate an upstream git URL to the internal one",
    "tags": ["repour"], "security": [],
    "requestBody": {"required": True, "content": _json("RepourExternalToInternalRequest")},
    "responses": {"200": {"description": "The internal URL", "content": _json("RepourExternalToInternal")},
                  "400": _ERRORS["400"], "413": _ERRORS["413"], "500": _ERRORS["500"]},
}}

OPENAPI_PATHS: dict[str, Any] = {
    "/": {"get": {"operationId": "repourInfo", "summary": "Information page (HTML)", "tags": ["repour"],
                  "security": [],
                  "responses": {"200": {"description": "HTML",
                                        "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/version": {"get": {"operationId": "repourVersion", "summary": "Name, version and commit",
                         "tags": ["repour"], "security": [],
                         "responses": {"200": {"description": "Version", "content": _json("RepourVersion")}}}},
    "/git-external-to-internal": _EXTERNAL,
    "/external-to-internal": {"post": {**_EXTERNAL["post"], "operationId": "repourExternalToInternalAlias"}},
    "/clone": _work_op("repourClone", "Fetch a ref (or everything) from an origin into an internal repository",
                       "RepourCloneRequest", "RepourCloneRequest", _OPERATION_ERRORS),
    "/adjust": _work_op("repourAdjust", "Sync, align, commit and tag a ref; dedup by tree",
                        "RepourAdjustRequest", "RepourAdjustResult", _OPERATION_ERRORS),
    "/internal-scm": _work_op("repourInternalScm", "Create an internal repository with owner groups",
                              "RepourInternalScmRequest", "RepourInternalScmResult"),
    "/cancel": {"post": {
        "operationId": "reqourCancel",
        "summary": "Reqour's cancel: {taskId, callback}; the result goes to the callback",
        "tags": ["repour"],
        "requestBody": {"required": True, "content": _json("ReqourCancelRequest")},
        "responses": {"202": {"description": "Accepted",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "400": _ERRORS["400"], "401": _ERRORS["401"], "413": _ERRORS["413"], "500": _ERRORS["500"]},
    }},
    "/cancel/{task_id}": {"post": {
        "operationId": "repourCancel", "summary": "Cancel the running clone/adjust with this taskId",
        "tags": ["repour"],
        "parameters": [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Cancelled", "content": _json("RepourMessages")},
                      "400": {"description": "No such running task", "content": _json("RepourMessages")},
                      "401": _ERRORS["401"], "500": _ERRORS["500"]},
    }},
}

_REQOUR_TOO = ("Reqour's spelling of the same request (pnc-api reqour.dto) is accepted too and "
               "translated into this one before it is checked (docs/pnc.md)")
# The request bodies, documented from the Fields the handlers validate with (repour/schema.py).
REQUEST_BODIES = {"RepourCloneRequest": CLONE_SCHEMA, "RepourAdjustRequest": ADJUST_SCHEMA,
                  "RepourInternalScmRequest": INTERNAL_SCM_SCHEMA,
                  "RepourExternalToInternalRequest": EXTERNAL_TO_INTERNAL_SCHEMA,
                  "ReqourCancelRequest": REQOUR_CANCEL_SCHEMA}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **{name: json_schema(body.fields, _REQOUR_TOO if name != "ReqourCancelRequest" else "")
       for name, body in REQUEST_BODIES.items()},
    "RepourError": {"description": "A list of {error_message, error_type, path} (validation), or an "
                                   "object {desc, cmd, exit_code, stderr, error_type} (processing)",
                    "type": ["array", "object"]},
    "RepourMessages": {"type": "array", "items": {"type": "object"}},
    **schemas(answers.CALLBACK_ACCEPTED, answers.VERSION, answers.EXTERNAL_TO_INTERNAL, answers.ADJUST_RESULT,
              answers.INTERNAL_SCM_RESULT),
}
