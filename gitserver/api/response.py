"""Response bodies: the REST API's side of :mod:`gitserver.jsonshape`, where a body's JSON and
its OpenAPI schema come from one :class:`~gitserver.jsonshape.Shape` declaration (what
:mod:`gitserver.api.body`'s Fields are for request bodies).

A resource module declares its own shapes with :mod:`gitserver.jsonshape`'s vocabulary, renders
its rows with ``Shape.render`` and puts :func:`schemas` in its ``OPENAPI_SCHEMAS``: the API's
part is the page of a list (:func:`gitserver.api.paging.page`). The objects the SSH self-service
prints too (users, keys, tokens, repositories, pipelines) are declared below the fronts, in
:mod:`gitserver.shapes`. A test renders every answer of the document for real rows and
validates the JSON against its schema.
"""

from __future__ import annotations

from typing import Any

from gitserver.api.paging import list_schema
from gitserver.jsonshape import Shape


def schemas(*shapes: Shape, listed: tuple[Shape, ...] = ()) -> dict[str, Any]:
    """``components/schemas`` entries for ``shapes``, by name, and for a page of each of
    ``listed`` (``<name>List``, see :func:`gitserver.api.paging.page`)."""
    out = {shape.name: shape.schema() for shape in (*shapes, *listed)}
    out.update({f"{shape.name}List": list_schema(shape.ref()["$ref"]) for shape in listed})
    return out
