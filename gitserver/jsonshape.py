"""A JSON object's one declaration, from which both its JSON and its JSON schema come (what
:mod:`gitserver.api.body`'s Fields are for request bodies).

A :class:`Shape` names its fields in order, each an :class:`Out`: the field's JSON schema and
where its value comes from — the row's attribute of the same name (the default), another
attribute, a function of the row, or (``given``) the caller, for what the row does not hold
(a URL from the configuration, a size measured on disk). :meth:`Shape.render` builds exactly
the declared keys and refuses an undeclared or missing one, and :meth:`Shape.schema` describes
exactly those keys, so a document cannot promise a field the renderer does not send, nor miss
one it does.

Pure, and below every layer that shows objects: the REST API's response bodies
(:mod:`gitserver.api.response`), the objects both fronts show (:mod:`gitserver.shapes`) and
the ones the worker stores for the API to show (webhook deliveries) are declared with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

SCHEMAS_PREFIX = "#/components/schemas/"

# JSON-schema fragments the shapes are made of.
INTEGER: Mapping[str, Any] = {"type": "integer"}
NULLABLE_INTEGER: Mapping[str, Any] = {"type": ["integer", "null"]}
NUMBER: Mapping[str, Any] = {"type": "number"}
NULLABLE_NUMBER: Mapping[str, Any] = {"type": ["number", "null"]}
STRING: Mapping[str, Any] = {"type": "string"}
NULLABLE_STRING: Mapping[str, Any] = {"type": ["string", "null"]}
BOOLEAN: Mapping[str, Any] = {"type": "boolean"}
STRINGS: Mapping[str, Any] = {"type": "array", "items": {"type": "string"}}
DATETIME: Mapping[str, Any] = {"type": "string", "format": "date-time"}
NULLABLE_DATETIME: Mapping[str, Any] = {"type": ["string", "null"], "format": "date-time"}
# An object of string values (HTTP headers as sent or received).
STRING_MAP: Mapping[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


def enum(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def enums(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """An array of some of ``values``."""
    return {"type": "array", "items": enum(values)}


@dataclasses.dataclass(frozen=True)
class Out:
    """One field of a JSON object.

    The value is the row's attribute ``attr`` (default: the field's own name), or ``value(row)``,
    or, with ``given``, what the caller passes to :meth:`Shape.render`. A field that is not
    ``required`` may be left out (it is, when it is ``given`` and the caller gives nothing).
    """

    schema: Mapping[str, Any]
    description: str = ""
    attr: str | None = None
    value: Callable[[Any], Any] | None = None
    given: bool = False
    required: bool = True

    def field_schema(self) -> dict[str, Any]:
        out = dict(self.schema)
        if self.description:
            out["description"] = self.description
        return out


@dataclasses.dataclass(frozen=True)
class Shape:
    """A JSON object with exactly ``fields``; ``name`` is its schema's name in
    ``components/schemas``."""

    name: str
    fields: Mapping[str, Out]

    def render(self, row: Any = None, /, **given: Any) -> dict[str, Any]:
        """The JSON object of ``row``: every declared field, in order, and nothing else."""
        unknown = set(given) - {name for name, out in self.fields.items() if out.given}
        if unknown:
            raise TypeError(f"{self.name} has no given field {', '.join(sorted(unknown))}")
        body: dict[str, Any] = {}
        for name, out in self.fields.items():
            if out.given:
                if name in given:
                    body[name] = given[name]
                elif out.required:
                    raise TypeError(f"{self.name}.{name} must be given")
            elif out.value is not None:
                body[name] = out.value(row)
            else:
                body[name] = getattr(row, out.attr or name)
        return body

    def of(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values``, built elsewhere, checked to be exactly this shape's fields: every one of
        them ``given``."""
        return self.render(**values)

    def schema(self) -> dict[str, Any]:
        """The JSON schema (OpenAPI 3.1) of :meth:`render`'s objects."""
        return {"type": "object", "required": [n for n, out in self.fields.items() if out.required],
                "properties": {name: out.field_schema() for name, out in self.fields.items()}}

    def ref(self) -> dict[str, str]:
        """A ``$ref`` to this shape in ``components/schemas``."""
        return {"$ref": SCHEMAS_PREFIX + self.name}

    def extend(self, name: str, fields: Mapping[str, Out]) -> Shape:
        """This shape with more fields (a detail view of a listed object)."""
        return Shape(name, {**self.fields, **fields})


def each(shape: Shape, attr: str, *, inline: bool = False, description: str = "") -> Out:
    """A field holding a list of ``shape``, rendered from the row's iterable ``attr``; the
    schema inline or a reference to ``shape``'s own."""
    items = shape.schema() if inline else shape.ref()
    return Out({"type": "array", "items": items}, description,
               value=lambda row: [shape.render(item) for item in getattr(row, attr)])


def nested(shape: Shape, description: str = "", *, given: bool = False) -> Out:
    """A field holding one ``shape`` (its schema inline), rendered from the row itself, or
    ``given`` already rendered (with ``shape.render``)."""
    if given:
        return Out(shape.schema(), description, given=True)
    return Out(shape.schema(), description, value=shape.render)
