"""The reference log ``refs/gitserver/log`` of one repository (docs/provenance.md): a chain of
server-signed commits, one per change of any other ref, each message one
:class:`~gitserver.provenance.entry.Entry`.

Every writer (the push ledger's done step, the reconciler, the archive step) appends through
:func:`append`, which holds the repository's log lock (``flock`` on a file beside the refs, so
writers of every process of this host take turns), reads the tip, and chains the new entries
on it. An entry whose ref already has that value in the log is dropped, so a retry or two
writers describing the same change log it once. Commits have the empty tree, as gittuf's
reference state log does: the entry is the message.

The latest value of each ref according to the log is kept in a cache file keyed by the tip it
was computed for; a cache for another tip is ignored and rebuilt by walking the chain, so the
cache can be deleted or be stale without harm (nobody verifies against it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pygit2

from gitserver.git import refs
from gitserver.provenance import gitsign
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import LOG_REF, Entry, EntryError, iso_now, parse

log = logging.getLogger(__name__)

LOCK_FILE = "gitserver-log.lock"
CACHE_FILE = "gitserver-log.json"
AUTHOR_NAME = "gitserver"
AUTHOR_EMAIL = "gitserver@localhost"


class Logged(NamedTuple):
    """An entry as written: its log commit and itself."""

    commit: str
    entry: Entry


@dataclasses.dataclass
class _State:
    """What the cache holds for one tip: each ref's latest value, and when the log began."""

    latest: dict[str, str]
    first: str


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def tip(repo: pygit2.Repository) -> str | None:
    ref = repo.references.get(LOG_REF)
    return None if ref is None else str(ref.target)


def walk(repo: pygit2.Repository, start: str | None) -> Iterator[pygit2.Commit]:
    """The log's commits from ``start`` back to the first (first parent only)."""
    oid = start
    while oid is not None:
        commit = repo[oid]
        if not isinstance(commit, pygit2.Commit):
            return
        yield commit
        oid = str(commit.parent_ids[0]) if commit.parent_ids else None


def latest_values(repo: pygit2.Repository, start: str | None) -> dict[str, str]:
    """Each ref's value according to the log ending at ``start`` (a deleted ref: zeros)."""
    return _walk_state(repo, start).latest


def _walk_state(repo: pygit2.Repository, start: str | None) -> _State:
    values: dict[str, str] = {}
    first = ""
    for commit in walk(repo, start):
        try:
            entry = parse(commit.message)
        except EntryError:
            continue  # a breach for check/verify to report; the writer only needs the values
        values.setdefault(entry.ref, entry.new)
        first = entry.time
    return _State(values, first)


def _cached_state(repo: pygit2.Repository, path: Path, at: str | None) -> _State:
    try:
        data = json.loads((path / CACHE_FILE).read_text())
        if data.get("tip") == at and isinstance(data.get("latest"), dict):
            return _State({str(k): str(v) for k, v in data["latest"].items()}, str(data.get("first", "")))
    except (OSError, ValueError):
        pass
    return _walk_state(repo, at)


def _store_cache(path: Path, at: str, state: _State) -> None:
    tmp = path / f".{CACHE_FILE}.tmp"
    tmp.write_text(json.dumps({"tip": at, "first": state.first, "latest": state.latest}, separators=(",", ":")))
    os.replace(tmp, path / CACHE_FILE)


def logged_values(path: Path) -> dict[str, str]:
    """What the log says each ref holds (read under the lock: a consistent tip)."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        return _cached_state(repo, path, tip(repo)).latest


def first_time(path: Path) -> str:
    """When the log began (its first entry's time): where the continuity of the controls
    starts, for a repository created here and for one that predates the log alike."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        return _cached_state(repo, path, tip(repo)).first or iso_now()


def append(path: Path, key: signing.Signer, entries: Sequence[Entry]) -> list[Logged]:
    """Chain ``entries`` onto the log of the repository at ``path``; the ones written (an entry
    for a value the log has already is left out). Each entry's ``old`` is the value the log
    had for its ref, so the log describes itself even when a caller saw an older value."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        head = tip(repo)
        state = _cached_state(repo, path, head)
        written: list[Logged] = []
        when = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for entry in entries:
            old = state.latest.get(entry.ref, refs.ZERO_OID)
            if old == entry.new:
                continue
            entry = dataclasses.replace(entry, old=old, time=entry.time or iso_now())
            author = gitsign.Ident(AUTHOR_NAME, AUTHOR_EMAIL, when)
            head = gitsign.write_signed_commit(repo, key, _empty_tree(repo), [head] if head else [],
                                               author, entry.message())
            state.latest[entry.ref] = entry.new
            state.first = state.first or entry.time
            written.append(Logged(head, entry))
        if written and head is not None:
            repo.references.create(LOG_REF, pygit2.Oid(hex=head), force=True)
            _store_cache(path, head, state)
            log.debug("%s: %d log entries, tip %s", path.name, len(written), head)
        return written


def _empty_tree(repo: pygit2.Repository) -> str:
    return str(repo.TreeBuilder().write())


def present(path: Path) -> bool:
    """Whether the repository has its log, read from the files (the reconciler asks this of
    every repository on every pass, so no repository is opened): the loose ref, or its line
    in packed-refs. A repository with no refs at all needs none yet."""
    if (path / LOG_REF).is_file():
        return True
    try:
        packed = (path / "packed-refs").read_bytes()
    except OSError:
        packed = b""
    if f" {LOG_REF}\n".encode() in packed:
        return True
    return not packed and not any(_loose_refs(path / "refs"))


def _loose_refs(directory: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            yield Path(dirpath) / name
