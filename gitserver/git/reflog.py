"""A ref's reflog, read as plain lines: the history of values the ref held on disk.

Repositories run with ``core.logAllRefUpdates=always`` (gitserver.git.store.PROTECTED_CONFIG,
written into new repositories' config and given on every git command line, so older
repositories log too): every ``git update-ref`` appends ``<old> <new> <ident> <time> <tz>\\t<msg>``
to ``logs/<ref>``. The ledger reconciler settles a pending intent by it, and ``gitserver
check`` verifies the ledger against it (docs/ledger.md). git removes a ref's reflog when it
deletes the ref; no maintenance gitserver runs expires entries (``gc.auto=0``, no ``gc``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gitserver.git import refs

log = logging.getLogger(__name__)

LOGS_DIR = "logs"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One move of a ref: from ``old`` to ``new`` at ``time`` (seconds since the epoch)."""

    old: str
    new: str
    time: int


def read(repo_path: Path, ref: str) -> list[Entry] | None:
    """The reflog of ``ref``, oldest first; None when the ref has none (never logged, or
    deleted). Lines that do not parse are skipped: a reflog is git's, not ours."""
    try:
        text = (repo_path / LOGS_DIR / ref).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    entries = []
    for line in text.splitlines():
        entry = _parse(line)
        if entry is not None:
            entries.append(entry)
    return entries


def _parse(line: str) -> Entry | None:
    head = line.split("\t", 1)[0]
    fields = head.split(" ")
    if len(fields) < 4 or not (refs.is_oid(fields[0]) and refs.is_oid(fields[1])):
        return None
    # The identity may hold spaces; time and zone are the last two fields before the tab.
    try:
        when = int(fields[-2])
    except ValueError:
        return None
    return Entry(fields[0], fields[1], when)


def logged_refs(repo_path: Path) -> list[str]:
    """Every ref under ``refs/`` that has a reflog."""
    root = repo_path / LOGS_DIR
    base = root / "refs"
    if not base.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in base.rglob("*") if p.is_file())
