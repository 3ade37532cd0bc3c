"""What an LFS object id and size may be (pure): the one check every front applies before a
name reaches the object store's paths or keys."""

from __future__ import annotations

import re

from gitserver.policy.errors import InvalidInput

# git-lfs object ids are the hex SHA-256 of the content (git-lfs's specification).
HASH_ALGO = "sha256"
OID_LENGTH = 64
_OID_RE = re.compile(r"[0-9a-f]{64}")
# The largest size accepted in a request: a BIGINT column, far beyond any object.
MAX_SIZE = 2**62


def check_oid(oid: object, field: str = "oid") -> str:
    """``oid`` when it is 64 lower-case hex digits; InvalidInput naming ``field`` otherwise."""
    if not isinstance(oid, str) or not _OID_RE.fullmatch(oid):
        raise InvalidInput(f"{field} must be the object's SHA-256 as 64 lower-case hex digits",
                           field=field)
    return oid


def check_size(size: object, field: str = "size") -> int:
    """``size`` when it is a whole number of bytes, 0 or more."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise InvalidInput(f"{field} must be the object's size in bytes (an integer, 0 or more)",
                           field=field)
    return size


def parse_size(text: str, field: str = "size") -> int:
    """A size sent as decimal text (the SSH protocol, Content-Length)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise InvalidInput(f"{field} must be a decimal number of bytes", field=field)
    return check_size(int(text), field)
