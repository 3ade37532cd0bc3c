"""Response bodies: the REST API's side of :mod:`gitserver.jsonshape`, where a body's JSON and
its OpenAPI schema come from one :class:`Shape` declaration (what :mod:`gitserver.api.body`'s
Fields are for request bodies).

A resource module declares its own shapes with the vocabulary re-exported here, renders its rows
with :meth:`Shape.render` and puts :func:`schemas` in its ``OPENAPI_SCHEMAS``. The objects the
SSH self-service prints too (users, keys, tokens, repositories, pipelines) are declared below
the fronts, in :mod:`gitserver.shapes`. A test renders every answer of the document for real
rows and validates the JSON against its schema.
"""

from __future__ import annotations

from typing import Any

from gitserver.api.paging import list_schema
from gitserver.jsonshape import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    NULLABLE_DATETIME,
    NULLABLE_INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    NUMBER,
    SCHEMAS_PREFIX,
    STRING,
    STRING_MAP,
    STRINGS,
    Out,
    Shape,
    each,
    enum,
    enums,
    nested,
)

# The resource modules' one import for declaring responses.
__all__ = ["BOOLEAN", "DATETIME", "INTEGER", "NULLABLE_DATETIME", "NULLABLE_INTEGER", "NULLABLE_NUMBER",
           "NULLABLE_STRING", "NUMBER", "SCHEMAS_PREFIX", "STRING", "STRINGS", "STRING_MAP", "Out", "Shape", "each",
           "enum", "enums", "nested", "schemas"]


def schemas(*shapes: Shape, listed: tuple[Shape, ...] = ()) -> dict[str, Any]:
    """``components/schemas`` entries for ``shapes``, by name, and for a page of each of
    ``listed`` (``<name>List``, see :func:`gitserver.api.paging.page`)."""
    out = {shape.name: shape.schema() for shape in (*shapes, *listed)}
    out.update({f"{shape.name}List": list_schema(shape.ref()["$ref"]) for shape in listed})
    return out
