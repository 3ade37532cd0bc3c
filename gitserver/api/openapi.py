"""The OpenAPI 3.1 document at ``/api/v1/openapi.json``, merged from the route modules.

Each route module (the list is :func:`gitserver.cmd.wiring.route_modules`, which mounts the
document with :class:`OpenApiDocument`; nothing here imports it back) describes its own routes
next to their code, in a module-level ``OPENAPI_PATHS`` (path template → path item) and optionally
``OPENAPI_SCHEMAS`` (components/schemas). :func:`build_document` merges them; a test compares
every falcon route with the merged document, so a route without documentation fails CI.

The helpers below (:func:`op`, :func:`json_body`, :func:`ref`, …) keep those descriptions short
and uniform: every error response is the shared ``Error`` schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import falcon

from gitserver.api.errors import ERROR
from gitserver.api.paging import OPENAPI_PARAMETERS
from gitserver.jsonshape import STRING, Out, Shape

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/api/v1/openapi.json"
SECURITY_SCHEME = "bearer"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_ERROR_RESPONSES = {
    400: ("BadRequest", "Bad input; `field` names the offending field"),
    401: ("Unauthorized", "No API token, or an unknown, expired or revoked one"),
    403: ("Forbidden", "Authenticated, but not allowed to do this"),
    404: ("NotFound", "Missing, or hidden from the caller (the two look the same)"),
    405: ("MethodNotAllowed", "Refused by the platform's policy (protected history)"),
    409: ("Conflict", "Already exists"),
    410: ("Gone", "Deleted on purpose (a pipeline log past pipeline_log_retention_days)"),
    413: ("PayloadTooLarge", "Request too large"),
    503: ("Unavailable", "A dependency is unavailable"),
}

COMMON_SCHEMAS: dict[str, Any] = {"Error": ERROR.schema()}

# What /healthz and /readyz answer (gitserver.api.app).
HEALTH = Shape("Health", {"status": Out(STRING, given=True)})

# Operational endpoints that are not part of /api/v1 but are served by the same app. A route
# module may describe them itself; its description then wins.
BASE_PATHS: dict[str, Any] = {
    DOCUMENT_PATH: {"get": {
        "operationId": "getOpenApiDocument", "summary": "This document", "tags": ["meta"],
        "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
    "/healthz": {"get": {
        "operationId": "getHealth", "summary": "Liveness: the process answers", "tags": ["meta"],
        "security": [],
        "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": HEALTH.schema()}}}},
    }},
    "/readyz": {"get": {
        "operationId": "getReady", "summary": "Readiness: the database answers", "tags": ["meta"],
        "security": [],
        "responses": {
            "200": {"description": "Ready", "content": {"application/json": {"schema": HEALTH.schema()}}},
            "503": {"description": "Database unreachable",
                    "content": {"application/json": {"schema": HEALTH.schema()}}},
        },
    }},
    "/metrics": {"get": {
        "operationId": "getMetrics", "summary": "Prometheus metrics", "tags": ["meta"],
        "security": [],
        "responses": {"200": {"description": "Prometheus text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
}


# --- helpers for route modules ----------------------------------------------------------------

def ref(schema: str) -> dict[str, str]:
    """A ``$ref`` to ``#/components/schemas/<schema>``."""
    return {"$ref": f"#/components/schemas/{schema}"}


def json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def json_body(schema: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
    """A ``requestBody`` of JSON."""
    return {"required": required, "content": json_content(schema)}


def path_param(name: str, description: str = "", schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description or name,
            "schema": dict(schema or {"type": "string"})}


def query_param(name: str, description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": dict(schema or {"type": "string"})}


def error_responses(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[code][0]}"} for code in codes}


def op(operation_id: str, summary: str, tag: str, responses: Mapping[int, Any] | Mapping[str, Any], *,
       errors: Iterable[int] = (400, 401, 403, 404), body: Mapping[str, Any] | None = None,
       parameters: Iterable[Mapping[str, Any]] = (), description: str = "",
       public: bool = False) -> dict[str, Any]:
    """One operation. ``responses`` maps success codes to (description, schema | None) pairs
    or to full response objects; ``errors`` lists the error statuses it can answer.
    ``public`` marks operations that also answer anonymous callers (public repositories)."""
    out: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        out["description"] = description
    params = [dict(p) for p in parameters]
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = dict(body)
    resp: dict[str, Any] = {}
    for code, value in responses.items():
        if isinstance(value, tuple):
            text, schema = value
            resp[str(code)] = {"description": text}
            if schema is not None:
                resp[str(code)]["content"] = json_content(schema)
        else:
            resp[str(code)] = dict(value)
    resp.update(error_responses(*errors))
    out["responses"] = resp
    if public:
        out["security"] = [{}, {SECURITY_SCHEME: []}]
    return out


# What a POST that creates can answer: bad input, no token, not allowed, a parent hidden or
# missing, a name or key taken.
CREATE_ERRORS = (400, 401, 403, 404, 409)


def create_op(operation_id: str, summary: str, tag: str, created: Shape, body: str, *,
              done: str = "Created", errors: Iterable[int] = CREATE_ERRORS) -> dict[str, Any]:
    """A POST that makes one ``created`` from the JSON body of schema ``body`` and answers
    it with 201 and a Location header naming it (:func:`gitserver.api.handlers.created`)."""
    return op(operation_id, summary, tag, {201: (f"{done}; Location names it", created.ref())},
              errors=errors, body=json_body(ref(body)))


def list_op(operation_id: str, summary: str, tag: str, what: str, listed: Shape, *,
            errors: Iterable[int] = (400, 401, 403, 404)) -> dict[str, Any]:
    """A GET of a page of ``listed`` objects (``what``, plural): its ``<name>List`` schema
    and the paging parameters (:func:`gitserver.api.handlers.listing`)."""
    return op(operation_id, summary, tag, {200: (f"A page of {what}", ref(f"{listed.name}List"))},
              errors=errors, parameters=OPENAPI_PARAMETERS)


# --- the document ------------------------------------------------------------------------------

def _components() -> dict[str, Any]:
    responses = {name: {"description": text, "content": json_content(ref("Error"))}
                 for name, text in _ERROR_RESPONSES.values()}
    return {
        "securitySchemes": {SECURITY_SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "An API token (`gitserver token create`, or POST …/users/{user}/tokens)"}},
        "schemas": copy.deepcopy(COMMON_SCHEMAS),
        "responses": responses,
    }


class DocumentError(Exception):
    """Two route modules describe the same operation or schema differently."""


def build_document(modules: Iterable[ModuleType]) -> dict[str, Any]:
    """Merge the ``OPENAPI_PATHS``/``OPENAPI_SCHEMAS`` of ``modules`` into one document."""
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "gitserver", "version": "1",
                 "description": "Admin REST API of gitserver: tenants, users, keys, tokens, groups, "
                                "repositories, grants, deploy keys, audit log, pipelines."},
        "security": [{SECURITY_SCHEME: []}],
        "paths": copy.deepcopy(BASE_PATHS),
        "components": _components(),
    }
    owners: dict[tuple[str, str], str] = {}
    for module in modules:
        name = module.__name__
        for path, item in getattr(module, "OPENAPI_PATHS", {}).items():
            target = doc["paths"].setdefault(path, {})
            for key, value in item.items():
                if key in HTTP_METHODS and (path, key) in owners and target.get(key) != value:
                    raise DocumentError(f"{key.upper()} {path} is described by both "
                                        f"{owners[(path, key)]} and {name}")
                owners[(path, key)] = name
                target[key] = copy.deepcopy(value)
        for schema_name, schema in getattr(module, "OPENAPI_SCHEMAS", {}).items():
            existing = doc["components"]["schemas"].get(schema_name)
            if existing is not None and existing != schema:
                raise DocumentError(f"schema {schema_name} is defined differently by {name}")
            doc["components"]["schemas"][schema_name] = copy.deepcopy(schema)
    return doc


_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")


def openapi_path(uri_template: str) -> str:
    """falcon's ``/x/{id:int}`` as OpenAPI's ``/x/{id}``."""
    return _CONVERTER.sub(r"{\1}", uri_template)


def app_routes(app: falcon.App) -> dict[str, set[str]]:
    """Every route of ``app`` with the HTTP methods its resources implement (lower case),
    leaving out falcon's automatic responders (405 for unimplemented methods, OPTIONS)."""
    from falcon import inspect as falcon_inspect

    routes: dict[str, set[str]] = {}
    for route in falcon_inspect.inspect_routes(app):
        methods = {m.method.lower() for m in route.methods if not m.internal}
        routes.setdefault(openapi_path(route.path), set()).update(methods)
    return routes


class OpenApiDocument:
    """Serves the merged document; built on first request, then cached (it is static)."""

    def __init__(self, modules: Iterable[ModuleType]) -> None:
        self.modules = list(modules)
        self._document: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = build_document(self.modules)
        return self._document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document()

