"""Request bodies: one JSON object, checked against an explicit list of fields.

An allow-list at the edge: a field the endpoint does not know is an error (a typo such as
``"visibilty"`` must not silently leave a repository private), types are exact (``true`` is not
an integer, ``"1"`` is not a boolean), and every rejection names the offending field. The body
is read with a hard limit, so a client cannot make a worker buffer more than
:data:`MAX_BODY_BYTES`.

The parsing itself (:func:`parse_object`) is pure and unit-tested; :func:`read_json` adapts it
to a falcon request.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import falcon

from gitserver.errors import InvalidInput

MAX_BODY_BYTES = 1024 * 1024
BODY_FIELD = "body"

_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "a boolean",
                                float: "a number", list: "an array", dict: "an object"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One allowed field of a JSON body.

    ``kind`` is the JSON type (str, int, bool, float, list, dict). ``items`` is the element
    type of a list. ``check`` receives ``(value, field_name)`` after the type check and returns
    the value to use (it may normalise); it raises :class:`InvalidInput` to refuse — the
    signature matches :func:`gitserver.names.validate_name`, so that can be used directly.
    """

    kind: type
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    items: type | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any, str], Any] | None = None


def _is_kind(value: Any, kind: type) -> bool:
    # bool is a subclass of int in Python; JSON true is not a number.
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _check_field(name: str, spec: Field, value: Any) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise InvalidInput(f"{name} must not be null", field=name)
    if not _is_kind(value, spec.kind):
        raise InvalidInput(f"{name} must be {_TYPE_NAMES.get(spec.kind, spec.kind.__name__)}", field=name)
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL text cannot hold NUL, and no name, description or key legitimately has one.
        raise InvalidInput(f"{name} must not contain NUL characters", field=name)
    if spec.max_length is not None and isinstance(value, (str, list)) and len(value) > spec.max_length:
        unit = "characters" if isinstance(value, str) else "items"
        raise InvalidInput(f"{name} must have at most {spec.max_length} {unit}", field=name)
    if spec.items is not None and isinstance(value, list):
        for item in value:
            if not _is_kind(item, spec.items) or (isinstance(item, str) and "\x00" in item):
                raise InvalidInput(f"every item of {name} must be {_TYPE_NAMES.get(spec.items, 'valid')}",
                                   field=name)
    if spec.choices is not None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in spec.choices]
        if bad:
            allowed = ", ".join(str(c) for c in spec.choices)
            raise InvalidInput(f"{name} must be one of {allowed}", field=name)
    if spec.check is not None:
        try:
            value = spec.check(value, name)
        except InvalidInput as exc:
            if exc.field is None:
                exc.field = name
            raise
    return value


def parse_object(raw: bytes, fields: Mapping[str, Field], *, allow_empty: bool = False) -> dict[str, Any]:
    """Parse and validate ``raw`` as a JSON object with exactly the allowed ``fields``.

    Returns only the fields present in the body (so a PATCH can tell "absent" from "null").
    An empty body counts as ``{}`` when ``allow_empty`` is set (e.g. a POST with no options).
    """
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(f"request body is larger than {MAX_BODY_BYTES // 1024} KiB", field=BODY_FIELD)
    if not raw.strip():
        if allow_empty:
            data: Any = {}
        else:
            raise InvalidInput("request body must be a JSON object", field=BODY_FIELD)
    else:
        data = _loads(raw)
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object", field=BODY_FIELD)
    unknown = sorted(k for k in data if k not in fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise InvalidInput(f"unknown field {unknown[0]!r} (allowed: {allowed})", field=unknown[0][:100])
    result: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in data:
            if spec.required:
                raise InvalidInput(f"{name} is required", field=name)
            continue
        result[name] = _check_field(name, spec, data[name])
    return result


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _loads(raw: bytes) -> Any:
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


def read_json(req: falcon.Request, fields: Mapping[str, Field], *, allow_empty: bool = False,
              limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object body, validated against ``fields`` (see :func:`parse_object`);
    at most ``limit`` bytes.

    The Content-Type is not checked: ``curl -d`` sends form-urlencoded by default and the
    README's examples rely on it; the body itself must be JSON either way.
    """
    return parse_object(read_body(req, limit), fields, allow_empty=allow_empty)
