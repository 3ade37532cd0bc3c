"""Ref name constants and validation (``git check-ref-format`` rules, in pure Python)."""

from __future__ import annotations

import re

ZERO_OID = "0" * 40
ZERO_OID_SHA256 = "0" * 64
PREFIX = "refs/"
HEADS = PREFIX + "heads/"
TAGS = PREFIX + "tags/"
# Names the server writes itself (archives); users may never push under them.
RESERVED_TAG_PREFIX = "repour-"
RESERVED_BRANCH_PREFIX = "branch-repour-"
# The reference log and the attestation notes (docs/provenance.md): the server's own too.
SERVER_LOG_REF = PREFIX + "gitserver/log"
ATTESTATION_NOTES_REF = PREFIX + "notes/attestations"
RESERVED_PREFIXES = (TAGS + RESERVED_TAG_PREFIX, HEADS + RESERVED_BRANCH_PREFIX, PREFIX + "gitserver/",
                     ATTESTATION_NOTES_REF)
# Only branches and tags may be pushed: other namespaces (notes, changes, pull) have no
# protection rules of their own here, so they are refused rather than left unguarded.
PUSHABLE_PREFIXES = (HEADS, TAGS)
# ``refs/heads/HEAD`` makes every ``HEAD`` ambiguous to git; it is never accepted.
AMBIGUOUS_BRANCH = HEADS + "HEAD"
MAX_REF_LENGTH = 1024

_OID_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BAD_CHARS_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def is_zero(oid: str) -> bool:
    return oid in (ZERO_OID, ZERO_OID_SHA256)


def is_oid(text: str) -> bool:
    return bool(_OID_RE.fullmatch(text))


def ref_format_problem(ref: str) -> str | None:
    """Why ``ref`` is not a well-formed full ref name, or None (see git-check-ref-format(1))."""
    if not ref or len(ref) > MAX_REF_LENGTH:
        return "ref name is empty or too long"
    if not ref.startswith(PREFIX):
        return "ref name must start with refs/"
    if _BAD_CHARS_RE.search(ref):
        return "ref name contains a forbidden character"
    if not ref.isascii():
        first = next(c for c in ref if not c.isascii())
        return (f"ref names must be ASCII; this one contains {first!r} (U+{ord(first):04X}), "
                "which macOS, Windows and Linux clients would store differently")
    if ".." in ref or "@{" in ref or "//" in ref:
        return "ref name contains '..', '@{' or '//'"
    if ref.endswith("/") or ref.endswith("."):
        return "ref name ends with '/' or '.'"
    for component in ref.split("/"):
        if component.startswith(".") or component.endswith(".lock") or component == "@":
            return "ref name has a component starting with '.' or ending with '.lock'"
    return None


def is_tag(ref: str) -> bool:
    return ref.startswith(TAGS)


def short_name(ref: str) -> str:
    """``refs/heads/main`` → ``main``, as git shows refs in push output."""
    for prefix in (HEADS, TAGS):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def namespaced(namespace: str, ref: str) -> str:
    """``refs/heads/x`` kept under ``namespace``: ``refs/<namespace>/heads/x`` (a prefix such as
    :data:`HEADS` maps the same way), so that refs fetched from two remotes never mix."""
    return f"{PREFIX}{namespace}/{ref.removeprefix(PREFIX)}"


def is_reserved(ref: str) -> bool:
    """Names the server writes itself. Compared without case: on a case-insensitive file
    system (a client's, or a server's on macOS) ``Repour-x`` and ``repour-x`` are one file."""
    return ref.lower().startswith(RESERVED_PREFIXES)
