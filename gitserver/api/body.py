"""Request bodies: one JSON object, checked against an explicit list of fields, and the JSON
schema of that list for the OpenAPI document.

An allow-list at the edge: a field the endpoint does not know is an error (a typo such as
``"visibilty"`` must not silently leave a repository private), types are exact (``true`` is not
an integer, ``"1"`` is not a boolean), and every rejection names the offending field. The body
is read with a hard limit, so a client cannot make a worker buffer more than
:data:`MAX_BODY_BYTES`.

The :class:`Field` declarations are the one source of a body's rules: :func:`problems` checks a
value against them (pure, unit-tested), :func:`json_schema` describes them for the OpenAPI
document, so the document cannot promise what the handler does not check. Two dialects read
the same problems: the REST API's first problem as an :class:`InvalidInput`
(:func:`parse_object`, :func:`read_json`), and the Repour-compatible endpoints' full error list
(``gitserver.repour.schema``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import falcon

from gitserver.policy.errors import InvalidInput

MAX_BODY_BYTES = 1024 * 1024
BODY_FIELD = "body"

_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "a boolean",
                                float: "a number", list: "an array", dict: "an object"}
_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", bool: "boolean", float: "number",
                                list: "array", dict: "object"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One allowed field of a JSON body.

    ``kind`` is the JSON type (str, int, bool, float, list, dict), or ``object`` for any JSON
    value, null included (``choices`` or ``check`` then decide). ``items`` is the element of a list: a type,
    or a Field for elements with rules of their own. ``fields`` makes a dict a nested object
    with exactly these fields; ``exactly_one`` names its fields of which exactly one must be
    present. ``check`` receives ``(value, field_name)`` after the other rules and returns the
    value to use (it may normalise); it raises :class:`InvalidInput` to refuse — the signature
    matches :func:`gitserver.policy.names.validate_name`, so that can be used directly.

    ``description`` and ``doc`` only describe: ``doc`` holds JSON-schema keywords for what
    ``check`` enforces (a pattern, a format), merged into the field's schema.
    """

    kind: type
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    items: type | Field | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any, str], Any] | None = None
    min_length: int | None = None
    fields: Mapping[str, Field] | None = None
    exactly_one: tuple[str, ...] = ()
    description: str = ""
    doc: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a value was refused, in neither dialect's words (see :func:`rest_error`).

    ``code``: null, type, nul, min_length, max_length, items, choice, check, required, extra or
    exactly_one. ``field`` is the Field the value broke (None for an unknown key); ``message``
    is the check's own; ``keys`` the allowed or alternative keys."""

    path: tuple[str | int, ...]
    code: str
    field: Field | None = None
    message: str = ""
    keys: tuple[str, ...] = ()
    error_field: str | None = None


def _is_kind(value: Any, kind: type) -> bool:
    if kind is object:
        return True
    # bool is a subclass of int in Python; JSON true is not a number.
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_value(value: Any, spec: Field, path: tuple[str | int, ...] = ()) -> tuple[Any, list[Problem]]:
    """``value`` checked against ``spec``: the value to use, and every problem found (nested
    objects and list elements are each checked; a scalar stops at its first problem)."""
    name = str(path[-1]) if path else BODY_FIELD
    if value is None and spec.nullable:
        return None, []
    if value is None and spec.kind is not object:  # ``object`` is any JSON value: null too
        return None, [Problem(path, "null", spec)]
    if not _is_kind(value, spec.kind):
        return value, [Problem(path, "type", spec)]
    if isinstance(value, str) and "\x00" in value and spec.kind is not object:
        # PostgreSQL text cannot hold NUL, and no name, description or key legitimately has one.
        return value, [Problem(path, "nul", spec)]
    if isinstance(value, (str, list)) and spec.kind is not object:
        if spec.min_length is not None and len(value) < spec.min_length:
            return value, [Problem(path, "min_length", spec)]
        if spec.max_length is not None and len(value) > spec.max_length:
            return value, [Problem(path, "max_length", spec)]
    if isinstance(value, list) and isinstance(spec.items, Field):
        checked = [check_value(item, spec.items, (*path, i)) for i, item in enumerate(value)]
        found = [p for _, problems in checked for p in problems]
        if found:
            return value, found
        value = [item for item, _ in checked]
    elif isinstance(value, list) and isinstance(spec.items, type) and any(
            not _is_kind(item, spec.items) or (isinstance(item, str) and "\x00" in item) for item in value):
        return value, [Problem(path, "items", spec)]
    if isinstance(value, dict) and spec.fields is not None:
        return object_problems(value, spec.fields, path, exactly_one=spec.exactly_one)
    if spec.choices is not None:
        values = value if isinstance(value, list) and spec.kind is list else [value]
        if any(v not in spec.choices for v in values):
            return value, [Problem(path, "choice", spec)]
    if spec.check is not None:
        try:
            value = spec.check(value, name)
        except InvalidInput as exc:
            return value, [Problem(path, "check", spec, message=exc.message, error_field=exc.field)]
    return value, []


def object_problems(data: Mapping[str, Any], fields: Mapping[str, Field], path: tuple[str | int, ...] = (), *,
                    exactly_one: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[Problem]]:
    """An object with exactly ``fields``: the fields present (checked values), and the problems
    of every field in declaration order, then the unknown keys, then ``exactly_one``."""
    result: dict[str, Any] = {}
    found: list[Problem] = []
    for name, spec in fields.items():
        if name not in data:
            if spec.required:
                found.append(Problem((*path, name), "required", spec))
            continue
        result[name], problems = check_value(data[name], spec, (*path, name))
        found += problems
    allowed = tuple(sorted(fields))
    found += [Problem((*path, key), "extra", keys=allowed) for key in data if key not in fields]
    if exactly_one and sum(1 for k in exactly_one if k in data) != 1:
        found.append(Problem((*path, exactly_one[0]), "exactly_one", keys=exactly_one))
    return result, found


def rest_error(problem: Problem) -> InvalidInput:
    """The REST API's words for a problem: ``<field> must …``, naming the field."""
    name = ".".join(str(p) for p in problem.path) or BODY_FIELD
    if problem.code == "extra":
        key = str(problem.path[-1])
        return InvalidInput(f"unknown field {key!r} (allowed: {', '.join(problem.keys) or 'none'})", field=key[:100])
    if problem.code == "check":
        return InvalidInput(problem.message, field=problem.error_field or name)
    if problem.code == "exactly_one":
        return InvalidInput(f"exactly one of {', '.join(problem.keys)} is required", field=name)
    spec = problem.field or Field(object)
    unit = "items" if spec.kind is list else "characters"
    messages = {
        "required": f"{name} is required",
        "null": f"{name} must not be null",
        "type": f"{name} must be {_TYPE_NAMES.get(spec.kind, spec.kind.__name__)}",
        "nul": f"{name} must not contain NUL characters",
        "min_length": f"{name} must have at least {spec.min_length} {unit}",
        "max_length": f"{name} must have at most {spec.max_length} {unit}",
        "items": f"every item of {name} must be "
                 f"{_TYPE_NAMES.get(spec.items, 'valid') if isinstance(spec.items, type) else 'valid'}",
        "choice": f"{name} must be one of {', '.join(str(c) for c in spec.choices or ())}",
    }
    return InvalidInput(messages[problem.code], field=name)


def parse_object(raw: bytes, fields: Mapping[str, Field], *, allow_empty: bool = False) -> dict[str, Any]:
    """Parse and validate ``raw`` as a JSON object with exactly the allowed ``fields``.

    Returns only the fields present in the body (so a PATCH can tell "absent" from "null").
    An empty body counts as ``{}`` when ``allow_empty`` is set (e.g. a POST with no options).
    An unknown field is reported first (the alphabetically first one), else the first field
    that breaks its rule.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(f"request body is larger than {MAX_BODY_BYTES // 1024} KiB", field=BODY_FIELD)
    if not raw.strip():
        if allow_empty:
            data: Any = {}
        else:
            raise InvalidInput("request body must be a JSON object", field=BODY_FIELD)
    else:
        data = loads(raw)
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object", field=BODY_FIELD)
    result, problems = object_problems(data, fields)
    extra = sorted((p for p in problems if p.code == "extra"), key=lambda p: str(p.path[-1]))
    if extra or problems:
        raise rest_error((extra or problems)[0])
    return result


# --- the JSON schema of the fields (the OpenAPI document's request bodies) ----------------------

def field_schema(spec: Field) -> dict[str, Any]:
    """The JSON schema (OpenAPI 3.1) of one field: exactly the rules :func:`check_value` applies,
    plus what ``doc`` says ``check`` adds."""
    out: dict[str, Any] = {}
    json_type = _JSON_TYPES.get(spec.kind)
    if json_type is not None:
        out["type"] = [json_type, "null"] if spec.nullable else json_type
    if spec.description:
        out["description"] = spec.description
    if spec.kind is str:
        if spec.min_length is not None:
            out["minLength"] = spec.min_length
        if spec.max_length is not None:
            out["maxLength"] = spec.max_length
    elif spec.kind is list:
        if spec.min_length is not None:
            out["minItems"] = spec.min_length
        if spec.max_length is not None:
            out["maxItems"] = spec.max_length
        if isinstance(spec.items, Field):
            out["items"] = field_schema(spec.items)
        elif spec.items is not None:
            out["items"] = {"type": _JSON_TYPES[spec.items]}
    elif spec.fields is not None:
        out.update(json_schema(spec.fields))
        if spec.nullable:
            out["type"] = ["object", "null"]
        if spec.exactly_one:
            out["oneOf"] = [{"required": [name]} for name in spec.exactly_one]
    if spec.choices is not None:
        choices = list(spec.choices)
        if spec.kind is list:
            out.setdefault("items", {})["enum"] = choices
        else:
            out["enum"] = [*choices, None] if spec.nullable else choices
    out.update(spec.doc)
    if spec.nullable and isinstance(out.get("type"), str):  # a type given in ``doc``
        out["type"] = [out["type"], "null"]
    return out


def json_schema(fields: Mapping[str, Field], description: str = "") -> dict[str, Any]:
    """The JSON schema of an object with exactly ``fields`` (a request body)."""
    out: dict[str, Any] = {"type": "object"}
    if description:
        out["description"] = description
    required = [name for name, spec in fields.items() if spec.required]
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    out["properties"] = {name: field_schema(spec) for name, spec in fields.items()}
    return out


def request_schemas(bodies: Mapping[str, Mapping[str, Field]]) -> dict[str, Any]:
    """``components/schemas`` entries for the request bodies of a route module, by name."""
    return {name: json_schema(fields) for name, fields in bodies.items()}


# --- reading the request --------------------------------------------------------------------

def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def loads(raw: bytes) -> Any:
    """``raw`` as JSON; :class:`InvalidInput` naming the body otherwise."""
    try:
        text = raw.decode("utf-8")
        # NaN and Infinity are not JSON, though Python's parser accepts them.
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidInput("request body must be UTF-8 encoded JSON", field=BODY_FIELD) from exc
    except RecursionError as exc:
        raise InvalidInput("request body is nested too deeply", field=BODY_FIELD) from exc
    except ValueError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field=BODY_FIELD) from exc



def read_body(req: falcon.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read at most ``limit`` + 1 bytes: enough to know the body is too large without
    buffering an arbitrarily large one."""
    length = req.content_length
    if length is not None and length > limit:
        raise InvalidInput(f"request body is larger than {limit // 1024} KiB", field=BODY_FIELD)
    return req.bounded_stream.read(limit + 1)


def read_json_value(req: falcon.Request, spec: Field, name: str, *, limit: int = MAX_BODY_BYTES) -> Any:
    """A request body that is one JSON value (an array, say) checked against ``spec``; the
    first problem names its field from ``name`` (``rules.0.pattern``)."""
    raw = read_body(req, limit)
    if len(raw) > limit:
        raise InvalidInput(f"request body is larger than {limit // 1024} KiB", field=BODY_FIELD)
    value, problems = check_value(loads(raw), spec, (name,))
    if problems:
        raise rest_error(problems[0])
    return value


def read_json(req: falcon.Request, fields: Mapping[str, Field], *, allow_empty: bool = False,
              limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object body, validated against ``fields`` (see :func:`parse_object`);
    at most ``limit`` bytes.

    The Content-Type is not checked: ``curl -d`` sends form-urlencoded by default and the
    README's examples rely on it; the body itself must be JSON either way.
    """
    return parse_object(read_body(req, limit), fields, allow_empty=allow_empty)
