"""One entry of the reference log: the JSON message of a ``refs/gitserver/log`` commit (pure).

The message is exactly one JSON object with the fields of :data:`FIELDS`, in that order, on one
line; :func:`parse` refuses anything else, so an entry rewritten by hand (a field added, a type
changed) is a breach rather than a guess.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from gitserver.git import refs

LOG_REF = refs.SERVER_LOG_REF
NOTES_REF = refs.ATTESTATION_NOTES_REF
# The refs the log does not describe: itself, and the notes (they only ever fast-forward).
UNLOGGED = (LOG_REF, NOTES_REF)
# The ``protocol`` of an entry for a ref the server writes itself (archive tags and branches).
PROTOCOL_SERVER = "server"
# A value on disk that no push recorded (the reconciler's ``recovered`` pushes say the same).
PROTOCOL_RECOVERED = "recovered"
FIELDS = ("ref", "old", "new", "push_id", "pusher", "key_fingerprint", "protocol", "time", "rules")


class EntryError(ValueError):
    """A log message that is not one well-formed entry."""


def is_logged(ref: str) -> bool:
    return ref.startswith(refs.PREFIX) and ref not in UNLOGGED


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A change of ``ref`` from ``old`` (40 zeros: created) to ``new``, who made it and when."""

    ref: str
    old: str
    new: str
    push_id: int | None = None
    pusher: str | None = None
    key_fingerprint: str | None = None
    protocol: str = PROTOCOL_SERVER
    time: str = ""
    rules: str | None = None  # the rule-set id of the per-ref rules that judged it

    def message(self) -> str:
        return json.dumps({name: getattr(self, name) for name in FIELDS}, separators=(",", ":")) + "\n"


_TYPES: dict[str, tuple[type, ...]] = {
    "ref": (str,), "old": (str,), "new": (str,), "push_id": (int, type(None)),
    "pusher": (str, type(None)), "key_fingerprint": (str, type(None)), "protocol": (str,),
    "time": (str,), "rules": (str, type(None)),
}


def parse(message: str) -> Entry:
    """The entry of a log commit's message; EntryError naming what is wrong."""
    try:
        data: Any = json.loads(message)
    except ValueError as exc:
        raise EntryError("message is not JSON") from exc
    if not isinstance(data, dict) or list(data) != list(FIELDS):
        raise EntryError(f"message must be one object with the fields {', '.join(FIELDS)}")
    for name, types in _TYPES.items():
        value = data[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise EntryError(f"field {name} has the wrong type")
    if not (refs.is_oid(data["old"]) and refs.is_oid(data["new"])):
        raise EntryError("old and new must be object ids")
    if refs.ref_format_problem(data["ref"]) or not is_logged(data["ref"]):
        raise EntryError(f"ref {data['ref'][:80]!r} cannot be in the log")
    return Entry(**data)
