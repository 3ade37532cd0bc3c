"""Keyset pagination for list endpoints: ``{"items": [...], "next": cursor | null}``.

Pages are cut on a unique, monotonic column (the id), never with OFFSET: a row inserted while
a client pages through cannot shift later pages, and every page is an index range scan. The
cursor is opaque to clients (base64 of a small versioned string) so the scheme can change.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import falcon
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gitserver.policy.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
_CURSOR_VERSION = "v1"


def parse_limit(value: str | None) -> int:
    """``limit`` query parameter: an integer from 1 to 100, default 50."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit():
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    limit = int(value)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return limit


def encode_cursor(last_id: int, descending: bool) -> str:
    text = f"{_CURSOR_VERSION}:{'d' if descending else 'a'}:{last_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, descending: bool) -> int:
    """The id a page continues after. A cursor from another list order is refused rather than
    silently returning a wrong page."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        version, direction, last = raw.decode("ascii").split(":")
        last_id = int(last)
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidInput("cursor is not a cursor returned by this list", field="cursor") from exc
    if version != _CURSOR_VERSION or direction != ("d" if descending else "a") or last_id < 0:
        raise InvalidInput("cursor is not a cursor returned by this list", field="cursor")
    return last_id


def page(session: Session, stmt: Select[Any], order_column: InstrumentedAttribute[int],
         req: falcon.Request, *, serialize: Callable[[Any], Any] | None = None,
         descending: bool = False) -> dict[str, Any]:
    """Run ``stmt`` (a select of one entity) one page at a time, ordered by ``order_column``.

    Reads ``limit`` and ``cursor`` from the query string. ``serialize`` maps each row to its
    JSON representation; without it the items are the rows themselves.
    """
    limit = parse_limit(req.get_param("limit"))
    cursor = req.get_param("cursor")
    if cursor:
        after = decode_cursor(cursor, descending)
        stmt = stmt.where(order_column < after if descending else order_column > after)
    stmt = stmt.order_by(order_column.desc() if descending else order_column.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt).unique().all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(getattr(rows[-1], order_column.key), descending)
    items = [serialize(r) for r in rows] if serialize else rows
    return {"items": items, "next": next_cursor}


# The OpenAPI parameters every list endpoint takes.
OPENAPI_PARAMETERS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "required": False,
     "description": f"page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
    {"name": "cursor", "in": "query", "required": False,
     "description": "the `next` value of the previous page", "schema": {"type": "string"}},
]


def list_schema(item_ref: str) -> dict[str, Any]:
    """JSON schema of a page of ``item_ref`` (a ``#/components/schemas/...`` reference)."""
    return {"type": "object", "required": ["items", "next"], "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": {"$ref": item_ref}},
                           "next": {"type": ["string", "null"]}}}
