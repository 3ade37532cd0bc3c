"""How answers are shown: aligned tables and ``key: value`` blocks for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NONE = "-"  # a null or empty cell; an empty string would shift the columns a reader scans
MAX_CELL = 60  # a long description must not push the other columns off the screen
GAP = "  "


def cell(value: Any, limit: int | None = MAX_CELL) -> str:
    """One value as text: lists joined by commas, booleans as yes/no, no line breaks, at most
    ``limit`` characters (a table's cell) or all of it (``None``: one object's field)."""
    if value is None or value == "" or value == []:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        text = ",".join(cell(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    # Control characters (a newline in a description) would break the table's rows.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A header of ``columns`` (upper case) and one aligned row per item; the last column is
    not padded, so no line ends in spaces."""
    rows = [[c.upper() for c in columns]] + [[cell(item.get(c)) for c in columns] for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for row in rows:
        padded = [text.ljust(widths[i]) for i, text in enumerate(row[:-1])] + [row[-1]]
        lines.append(GAP.join(padded).rstrip())
    return "\n".join(lines)


def fields(obj: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """``key: value`` lines for one object, in the API's order (or ``keys``'), keys aligned."""
    names = [k for k in (keys if keys is not None else obj) if k in obj]
    width = max((len(k) for k in names), default=0)
    return "\n".join(f"{(k + ':').ljust(width + 1)} {_field(obj[k])}" for k in names)


def _field(value: Any) -> str:
    nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))
    return json.dumps(value, ensure_ascii=False) if nested else cell(value, limit=None)


def as_json(value: Any) -> str:
    """The API's own object, for scripts: one JSON document, keys as the API orders them."""
    return json.dumps(value, indent=2, ensure_ascii=False)
