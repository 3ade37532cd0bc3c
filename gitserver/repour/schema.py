"""The request bodies of the Repour-compatible endpoints, and Repour's error list for a body
that breaks them.

The bodies are :class:`gitserver.api.body.Field` declarations, like the REST API's: the same
checker validates them and the same function describes them in the OpenAPI document
(:func:`gitserver.api.body.json_schema`). Only the words differ: Repour answers a bad body with
voluptuous's list of every error, ``{"error_message", "error_type", "path"}`` (:func:`repour_error`),
and its own messages ("expected str", "required key not provided", "extra keys not allowed").
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import falcon

from gitserver.api.body import Field, Problem, check_value
from gitserver.net import netguard
from gitserver.observe import metrics
from gitserver.pipelines import heartbeat
from gitserver.policy.errors import InvalidInput
from gitserver.repour import reqour
from gitserver.repour.adjust import ALIGNMENT_PREFERENCES, BUILD_TYPES
from gitserver.repour.giturl import parse_git_url

MAX_BODY_BYTES = 1024 * 1024

# Repour's error body for a request that is not JSON, byte for byte.
EXPECTED_JSON = [{"error_message": "expected json", "error_type": "json parsability", "path": []}]

Error = dict[str, Any]


def error(message: str, path: list[Any] | tuple[Any, ...], error_type: str = "dictionary value") -> Error:
    """One validation error. Repour's README documents ``error_message``/``error_type``/``path``;
    Repour itself answers voluptuous's ``Invalid.__dict__``, which (voluptuous 0.16) is
    ``_error_message``/``_path``/``error_type``: both spellings are sent."""
    return {"error_message": message, "error_type": error_type, "path": list(path),
            "_error_message": message, "_path": list(path)}


_TYPE_MESSAGES = {str: "expected str", bool: "expected bool", list: "expected list", dict: "expected dict",
                  int: "expected int", float: "expected float"}


def repour_error(problem: Problem) -> Error:
    """A problem in Repour's (voluptuous's) words."""
    spec = problem.field or Field(object)
    if problem.code == "required":
        return error("required key not provided", problem.path, "required key")
    if problem.code == "extra":
        return error("extra keys not allowed", problem.path, "extra key")
    if problem.code == "exactly_one":
        return error(f"exactly one of {', '.join(problem.keys)} is required", problem.path, "required key")
    if problem.code in ("null", "type"):
        message = ("expected a dictionary" if spec.fields is not None
                   else _TYPE_MESSAGES.get(spec.kind, "expected a value"))
    else:
        message = {"nul": "NUL characters are not allowed",
                   "min_length": f"length of value must be at least {spec.min_length}",
                   "max_length": f"length of value must be at most {spec.max_length}",
                   "items": "not a valid value", "choice": "not a valid value"}.get(problem.code, problem.message)
    return error(message, problem.path)


@dataclasses.dataclass(frozen=True)
class Schema:
    """A Repour body (or part of one): called with ``(value, path)``, it answers Repour's list of
    every error (empty: valid). ``field`` is the declaration, for the OpenAPI document."""

    field: Field

    @property
    def fields(self) -> Mapping[str, Field]:
        return self.field.fields or {}

    def __call__(self, value: Any, path: list[Any]) -> list[Error]:
        return [repour_error(p) for p in check_value(value, self.field, tuple(path))[1]]


def body(fields: Mapping[str, Field], *, exactly_one: tuple[str, ...] = ()) -> Field:
    """An object with exactly these fields (extra keys refused, like Repour's ``extra=False``)."""
    return Field(dict, fields=fields, exactly_one=exactly_one)


# --- the checks Repour's validators make beyond the type -------------------------------------------

MAX_STRING = 2000
TASK_ID_MAX = 200


def _text(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        raise InvalidInput("expected str")
    return value


def _no_blank(value: str, name: str) -> str:
    if any(c.isspace() for c in value):
        raise InvalidInput("does not match regular expression ^\\S+$")
    return value


def _task_id(value: str, name: str) -> str:
    if len(value) > TASK_ID_MAX:
        raise InvalidInput(f"length of value must be at most {TASK_ID_MAX}")
    return value


def _git_url(value: Any, name: str) -> Any:
    try:
        parse_git_url(value)
    except ValueError as exc:
        raise InvalidInput(f"expected a URL: {exc}") from exc
    return value


def _callback_url(value: Any, name: str) -> Any:
    # Syntax only (http/https, a host, no credentials): the address is checked on every send.
    try:
        netguard.check_url(value, allow_private=True)
    except netguard.UnsafeURL as exc:
        raise InvalidInput(f"expected a URL: {exc.message}") from exc
    return value


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _header_name(value: Any, name: str) -> Any:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        raise InvalidInput("expected an HTTP header name")
    return value


def _header_value(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        raise InvalidInput("expected str")
    if len(value) > 8192 or any(c in value for c in "\r\n\x00"):
        raise InvalidInput("expected one line of at most 8192 characters")
    try:
        value.encode("latin-1")  # what an HTTP header can carry
    except UnicodeEncodeError as exc:
        raise InvalidInput("expected ISO-8859-1 characters only") from exc
    return value


def _positive_number(value: Any, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput("expected a positive number")
    return value


# --- the fields -------------------------------------------------------------------------------------

def text(*, required: bool = False, nullable: bool = False) -> Field:
    """A non-empty string without NUL (text columns cannot hold NUL, and no ref or name has one)."""
    return Field(str, required=required, nullable=nullable, min_length=1, max_length=MAX_STRING)


def task_id(*, required: bool = False, nullable: bool = False) -> Field:
    """A text of at most :data:`TASK_ID_MAX` characters (checked after Repour's general limit)."""
    return Field(str, required=required, nullable=nullable, min_length=1, max_length=MAX_STRING, check=_task_id,
                 doc={"maxLength": TASK_ID_MAX})


def git_url(*, required: bool = False, nullable: bool = False) -> Field:
    return Field(object, required=required, nullable=nullable, check=_git_url,
                 doc={"type": "string"}, description="a git URL: scheme://host/path, user@host:path or /path")


def callback(*methods: str, required: bool = False, nullable: bool = False) -> Field:
    """Legacy ``{url, method}`` or pnc-api's Request ``{uri, method, headers: [{name, value}],
    attachment}`` (the attachment is accepted and not used, as in Repour)."""
    url = Field(object, check=_callback_url, doc={"type": "string"})
    header = body({"name": Field(object, required=True, check=_header_name, doc={"type": "string"}),
                   "value": Field(object, required=True, check=_header_value, doc={"type": "string"})})
    return dataclasses.replace(
        body({"url": url, "uri": url, "method": Field(object, choices=methods),
              "headers": Field(list, nullable=True, items=header), "attachment": Field(object)},
             exactly_one=("url", "uri")),
        required=required, nullable=nullable)


CALLBACK = Schema(callback("PUT", "POST"))
HEARTBEAT_CONFIG = Schema(body({
    "request": callback(*heartbeat.METHODS, required=True),
    "delay": Field(object, required=True, check=_positive_number, doc={"type": "number", "exclusiveMinimum": 0}),
    "delayTimeUnit": Field(object, nullable=True, choices=tuple(heartbeat.TIME_UNITS))}))
# Accepted by every work endpoint (Repour's endpoint wrapper reads them from any body).
COMMON_FIELDS = {
    # null as absent: pnc-api's DTOs serialise unset fields as null.
    "callback": dataclasses.replace(CALLBACK.field, nullable=True),
    "positiveCallback": dataclasses.replace(CALLBACK.field, nullable=True),
    "negativeCallback": dataclasses.replace(CALLBACK.field, nullable=True),
    "taskId": task_id(nullable=True),
}
CLONE_SCHEMA = Schema(body({
    "type": Field(object, required=True, choices=("git",)),
    "originRepoUrl": git_url(required=True),
    "targetRepoUrl": git_url(required=True),
    "ref": text(nullable=True),
    **COMMON_FIELDS,
}))
ADJUST_SCHEMA = Schema(body({
    "ref": text(required=True),
    "internal_url": dataclasses.replace(body({"readwrite": git_url(required=True),
                                              "readonly": git_url(required=True)}), required=True),
    "originRepoUrl": git_url(nullable=True),
    "sync": Field(bool),
    "adjustParameters": Field(dict, nullable=True),
    "buildType": Field(object, nullable=True, choices=BUILD_TYPES),
    "tempBuild": Field(bool),
    "tempBuildTimestamp": text(nullable=True),
    "alignmentPreference": Field(object, nullable=True, choices=ALIGNMENT_PREFERENCES),
    "defaultAlignmentParams": Field(object, nullable=True, check=_text, doc={"type": "string"}),
    # Reqour's (pnc-api HeartbeatConfig): beats sent while the adjust runs.
    "heartbeatConfig": dataclasses.replace(HEARTBEAT_CONFIG.field, nullable=True,
                                           description="pnc-api HeartbeatConfig: sent while the adjust runs"),
    "brewPullActive": Field(bool),
    **COMMON_FIELDS,
}))
_NO_BLANK = Field(str, min_length=1, max_length=MAX_STRING, check=_no_blank, doc={"pattern": "^\\S+$"})
INTERNAL_SCM_SCHEMA = Schema(body({
    "project": dataclasses.replace(_NO_BLANK, required=True),
    "owner_groups": Field(list, required=True, items=_NO_BLANK),
    "description": text(nullable=True),
    "parent_project": text(nullable=True),
    **COMMON_FIELDS,
}))
EXTERNAL_TO_INTERNAL_SCHEMA = Schema(body({"external_url": text(required=True)}))
# pnc-api Request methods: dingrogu's cancel sends a GET callback it ignores (never sent here).
REQOUR_CANCEL_SCHEMA = Schema(body({
    "taskId": task_id(required=True),
    "callback": callback("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", nullable=True)}))


class Reply(Exception):
    """Ends a request with this status and JSON body (validation and domain errors)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def read_body(req: falcon.Request, check: Schema) -> dict[str, Any]:
    """The JSON object body, validated; :class:`Reply` with Repour's error list otherwise."""
    return read_request(req, check)[0]


def read_request(req: falcon.Request, check: Schema, op_name: str = "") -> tuple[dict[str, Any], str]:
    """Like :func:`read_body`, and which face the body speaks: Repour's, or Reqour's (then
    translated into Repour's before it is checked, see :mod:`gitserver.repour.reqour`)."""
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise Reply(413, [error(f"the body is larger than {MAX_BODY_BYTES} bytes", [], "size")])
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise Reply(413, [error(f"the body is larger than {MAX_BODY_BYTES} bytes", [], "size")])
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        metrics.json_invalid(req.uri_template or req.path)
        raise Reply(400, EXPECTED_JSON) from None
    face = "repour"
    if op_name and reqour.is_reqour_body(op_name, body):
        face, body = reqour.FACE, reqour.to_repour_spec(op_name, body)
    errors = check(body, [])
    if errors:
        metrics.json_invalid(req.uri_template or req.path)
        raise Reply(400, errors)
    return body, face


