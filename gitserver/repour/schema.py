"""The request bodies of the Repour-compatible endpoints, and Repour's error list for a
body that breaks them."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import falcon

from gitserver import metrics, netguard
from gitserver.pipelines import heartbeat
from gitserver.repour import reqour
from gitserver.repour.adjust import ALIGNMENT_PREFERENCES, BUILD_TYPES
from gitserver.repour.giturl import parse_git_url

MAX_BODY_BYTES = 1024 * 1024

# Repour's error body for a request that is not JSON, byte for byte.
EXPECTED_JSON = [{"error_message": "expected json", "error_type": "json parsability", "path": []}]

Error = dict[str, Any]
Check = Callable[[Any, list[Any]], list[Error]]


def _error(message: str, path: list[Any], error_type: str = "dictionary value") -> Error:
    """One validation error. Repour's README documents ``error_message``/``error_type``/``path``;
    Repour itself answers voluptuous's ``Invalid.__dict__``, which (voluptuous 0.16) is
    ``_error_message``/``_path``/``error_type``: both spellings are sent."""
    return {"error_message": message, "error_type": error_type, "path": list(path),
            "_error_message": message, "_path": list(path)}


MAX_STRING = 2000


def nonempty_str(value: Any, path: list[Any]) -> list[Error]:
    if not isinstance(value, str):
        return [_error("expected str", path)]
    if not value:
        return [_error("length of value must be at least 1", path)]
    if len(value) > MAX_STRING:
        return [_error(f"length of value must be at most {MAX_STRING}", path)]
    if "\x00" in value:
        # Text columns cannot hold NUL (PostgreSQL refuses it), and no ref or name contains one.
        return [_error("NUL characters are not allowed", path)]
    return []


def task_id(value: Any, path: list[Any]) -> list[Error]:
    errors = nonempty_str(value, path)
    if not errors and len(value) > 200:
        return [_error("length of value must be at most 200", path)]
    return errors


def noblank_str(value: Any, path: list[Any]) -> list[Error]:
    errors = nonempty_str(value, path)
    if not errors and any(c.isspace() for c in value):
        return [_error("does not match regular expression ^\\S+$", path)]
    return errors


def null_or(check: Check) -> Check:
    def inner(value: Any, path: list[Any]) -> list[Error]:
        return [] if value is None else check(value, path)
    return inner


def boolean(value: Any, path: list[Any]) -> list[Error]:
    return [] if isinstance(value, bool) else [_error("expected bool", path)]


def mapping(value: Any, path: list[Any]) -> list[Error]:
    return [] if isinstance(value, dict) else [_error("expected dict", path)]


def one_of(*choices: Any) -> Check:
    def inner(value: Any, path: list[Any]) -> list[Error]:
        return [] if value in choices else [_error("not a valid value", path)]
    return inner


def git_url(value: Any, path: list[Any]) -> list[Error]:
    try:
        parse_git_url(value)
    except ValueError as exc:
        return [_error(f"expected a URL: {exc}", path)]
    return []


def callback_url(value: Any, path: list[Any]) -> list[Error]:
    # Syntax only (http/https, a host, no credentials): the address is checked on every send.
    try:
        netguard.check_url(value, allow_private=True)
    except netguard.UnsafeURL as exc:
        return [_error(f"expected a URL: {exc.message}", path)]
    return []


def list_of(check: Check) -> Check:
    def inner(value: Any, path: list[Any]) -> list[Error]:
        if not isinstance(value, list):
            return [_error("expected list", path)]
        return [e for i, item in enumerate(value) for e in check(item, [*path, i])]
    return inner


@dataclasses.dataclass(frozen=True)
class Key:
    check: Check
    required: bool = False


def schema(keys: Mapping[str, Key], *, one_required: tuple[str, ...] = ()) -> Check:
    """An object with exactly these keys (extra keys refused, like Repour's ``extra=False``);
    ``one_required``: exactly one of these keys must be present."""
    def inner(value: Any, path: list[Any]) -> list[Error]:
        if not isinstance(value, dict):
            return [_error("expected a dictionary", path)]
        errors: list[Error] = []
        for name, key in keys.items():
            if name not in value:
                if key.required:
                    errors.append(_error("required key not provided", [*path, name], "required key"))
                continue
            errors += key.check(value[name], [*path, name])
        for name in value:
            if name not in keys:
                errors.append(_error("extra keys not allowed", [*path, name], "extra key"))
        if one_required and sum(1 for k in one_required if k in value) != 1:
            errors.append(_error(f"exactly one of {', '.join(one_required)} is required",
                                 [*path, one_required[0]], "required key"))
        return errors
    return inner


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def header_name(value: Any, path: list[Any]) -> list[Error]:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        return [_error("expected an HTTP header name", path)]
    return []


def header_value(value: Any, path: list[Any]) -> list[Error]:
    if not isinstance(value, str):
        return [_error("expected str", path)]
    if len(value) > 8192 or any(c in value for c in "\r\n\x00"):
        return [_error("expected one line of at most 8192 characters", path)]
    try:
        value.encode("latin-1")  # what an HTTP header can carry
    except UnicodeEncodeError:
        return [_error("expected ISO-8859-1 characters only", path)]
    return []


def anything(value: Any, path: list[Any]) -> list[Error]:
    return []


# Legacy ``{url, method}`` or pnc-api's Request ``{uri, method, headers: [{name, value}],
# attachment}`` (the attachment is accepted and not used, as in Repour).
def callback_schema(*methods: str) -> Check:
    return schema({"url": Key(callback_url), "uri": Key(callback_url),
                   "method": Key(one_of(*methods)),
                   "headers": Key(null_or(list_of(schema({"name": Key(header_name, required=True),
                                                          "value": Key(header_value, required=True)})))),
                   "attachment": Key(anything)}, one_required=("url", "uri"))


CALLBACK = callback_schema("PUT", "POST")


def positive_number(value: Any, path: list[Any]) -> list[Error]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return [_error("expected a positive number", path)]
    return []


HEARTBEAT_CONFIG = schema({"request": Key(callback_schema(*heartbeat.METHODS), required=True),
                           "delay": Key(positive_number, required=True),
                           "delayTimeUnit": Key(null_or(one_of(*heartbeat.TIME_UNITS)))})
# Accepted by every work endpoint (Repour's endpoint wrapper reads them from any body).
COMMON_KEYS = {
    # null as absent: pnc-api's DTOs serialise unset fields as null.
    "callback": Key(null_or(CALLBACK)),
    "positiveCallback": Key(null_or(CALLBACK)),
    "negativeCallback": Key(null_or(CALLBACK)),
    "taskId": Key(null_or(task_id)),
}
CLONE_SCHEMA = schema({
    "type": Key(one_of("git"), required=True),
    "originRepoUrl": Key(git_url, required=True),
    "targetRepoUrl": Key(git_url, required=True),
    "ref": Key(null_or(nonempty_str)),
    **COMMON_KEYS,
})
ADJUST_SCHEMA = schema({
    "ref": Key(nonempty_str, required=True),
    "internal_url": Key(schema({"readwrite": Key(git_url, required=True),
                                "readonly": Key(git_url, required=True)}), required=True),
    "originRepoUrl": Key(null_or(git_url)),
    "sync": Key(boolean),
    "adjustParameters": Key(null_or(mapping)),
    "buildType": Key(null_or(one_of(*BUILD_TYPES))),
    "tempBuild": Key(boolean),
    "tempBuildTimestamp": Key(null_or(nonempty_str)),
    "alignmentPreference": Key(null_or(one_of(*ALIGNMENT_PREFERENCES))),
    "defaultAlignmentParams": Key(null_or(lambda v, p: [] if isinstance(v, str) else [_error("expected str", p)])),
    # Reqour's (pnc-api HeartbeatConfig): beats sent while the adjust runs.
    "heartbeatConfig": Key(null_or(HEARTBEAT_CONFIG)),
    "brewPullActive": Key(boolean),
    **COMMON_KEYS,
})
INTERNAL_SCM_SCHEMA = schema({
    "project": Key(noblank_str, required=True),
    "owner_groups": Key(list_of(noblank_str), required=True),
    "description": Key(null_or(nonempty_str)),
    "parent_project": Key(null_or(nonempty_str)),
    **COMMON_KEYS,
})
EXTERNAL_TO_INTERNAL_SCHEMA = schema({"external_url": Key(nonempty_str, required=True)})


class Reply(Exception):
    """Ends a request with this status and JSON body (validation and domain errors)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def read_body(req: falcon.Request, check: Check) -> dict[str, Any]:
    """The JSON object body, validated; :class:`Reply` with Repour's error list otherwise."""
    return read_request(req, check)[0]


def read_request(req: falcon.Request, check: Check, op_name: str = "") -> tuple[dict[str, Any], str]:
    """Like :func:`read_body`, and which face the body speaks: Repour's, or Reqour's (then
    translated into Repour's before it is checked, see :mod:`gitserver.repour.reqour`)."""
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise Reply(413, [_error(f"the body is larger than {MAX_BODY_BYTES} bytes", [], "size")])
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise Reply(413, [_error(f"the body is larger than {MAX_BODY_BYTES} bytes", [], "size")])
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


# pnc-api Request methods: dingrogu's cancel sends a GET callback it ignores (never sent here).
REQOUR_CANCEL_SCHEMA = schema({"taskId": Key(task_id, required=True),
                               "callback": Key(null_or(callback_schema("GET", "POST", "PUT", "DELETE", "HEAD",
                                                                       "PATCH", "OPTIONS")))})
