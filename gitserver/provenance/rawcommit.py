"""A commit taken apart from its raw bytes (pure): what a reader of the reference log needs,
from one read of each object (libgit2's commit object would read and parse it a second time
besides the raw read that the signature check needs)."""

from __future__ import annotations

import dataclasses

PARENT = b"parent "
COMMITTER = b"committer "


@dataclasses.dataclass(frozen=True)
class RawCommit:
    id: str
    raw: bytes
    parents: list[str]
    time: int  # the committer's date, seconds since the epoch (0 when unreadable)
    message: str


def parse(oid: str, raw: bytes) -> RawCommit:
    head, _sep, body = raw.partition(b"\n\n")
    parents: list[str] = []
    time = 0
    for line in head.split(b"\n"):
        if line.startswith(PARENT):
            parents.append(line[len(PARENT):].decode("ascii", "replace"))
        elif line.startswith(COMMITTER):
            time = _seconds(line)
    return RawCommit(oid, raw, parents, time, body.decode("utf-8", "replace"))


def _seconds(line: bytes) -> int:
    """The date of an identity line, ``… <email> <seconds> <±hhmm>``."""
    fields = line.rpartition(b">")[2].split()
    try:
        return int(fields[0])
    except (IndexError, ValueError):
        return 0
