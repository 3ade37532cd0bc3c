"""The reference log ``refs/gitserver/log`` of one repository (docs/provenance.md): a chain of
server-signed commits, one per change of any other ref, each message one
:class:`~gitserver.provenance.entry.Entry`.

A push's entries are signed by :func:`chain` while the proc-receive hook holds the log's
lock (gitserver.provenance.loglock), and the hook moves the log's ref in the same ``git
update-ref`` transaction as the pushed refs (gitserver.push.refmove). Every other writer (the
reconciler, the archive step) appends through :func:`append`, which takes the lock, chains the
new entries on the tip and moves the ref itself. An entry whose ref already has that value in
the log is dropped, so a retry or two writers describing the same change log it once. Commits
have the empty tree, as gittuf's reference state log does: the entry is the message.

The latest value of each ref according to the log is kept in a cache file keyed by the tip it
was computed for; a cache for an older tip is brought up to date by walking the entries after
it, and one the walk never meets is ignored (the chain is walked whole), so the cache can be
deleted or be stale without harm (nobody verifies against it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pygit2

from gitserver.git import refs
from gitserver.provenance import gitsign, keys, loglock
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import LOG_REF, Entry, EntryError, iso_now, parse

log = logging.getLogger(__name__)

CACHE_FILE = "gitserver-log.json"
# Who the log's commits are by (author and committer): the server, as its notes are.
AUTHOR = ("gitserver", "gitserver@localhost")
locked = loglock.locked
KEY_UNUSABLE = "the server's signing key is unusable"


class LogError(Exception):
    """Entries could not be signed or written; the message is safe to show (the pusher, a
    job's log, a Repour caller): the details are in the server's log."""


class Logged(NamedTuple):
    """An entry as written: its log commit and itself."""

    commit: str
    entry: Entry


class Chained(NamedTuple):
    """Entries signed onto the log's tip ``base`` (None: the log is empty), not yet in the log:
    :func:`chain`'s answer, for the caller to move the log's ref from ``base`` to the last."""

    base: str | None
    written: list[Logged]


@dataclasses.dataclass
class _State:
    """What the cache holds for one tip: each ref's latest value, and when the log began."""

    latest: dict[str, str]
    first: str


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
    return _walk_state(repo, start)[0].latest


def _walk_state(repo: pygit2.Repository, start: str | None, stop: str | None = None) -> tuple[_State, bool]:
    """The state of the entries from ``start`` back to the first, or to ``stop`` (left out);
    whether ``stop`` was met."""
    values: dict[str, str] = {}
    first = ""
    for commit in walk(repo, start):
        if stop is not None and str(commit.id) == stop:
            return _State(values, first), True
        try:
            entry = parse(commit.message)
        except EntryError:
            continue  # a breach for check/verify to report; the writer only needs the values
        values.setdefault(entry.ref, entry.new)
        first = entry.time
    return _State(values, first), False


def _read_cache(path: Path) -> tuple[str, _State] | None:
    """The cache's tip and state, or None when there is none (or it is not ours)."""
    try:
        data = json.loads((path / CACHE_FILE).read_text())
        if isinstance(data.get("tip"), str) and isinstance(data.get("latest"), dict):
            return data["tip"], _State({str(k): str(v) for k, v in data["latest"].items()},
                                       str(data.get("first", "")))
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _cached_state(repo: pygit2.Repository, path: Path, at: str | None) -> tuple[_State, bool]:
    """The state at tip ``at``, and whether the cache held it as it is (else: store it)."""
    cached = _read_cache(path)
    if cached is not None and cached[0] == at:
        return cached[1], True
    newer, met = _walk_state(repo, at, cached[0] if cached is not None else None)
    if cached is not None and met:
        # The entries after the cached tip (a push's, written by the hook's transaction).
        return _State({**cached[1].latest, **newer.latest}, cached[1].first or newer.first), False
    return newer, False


def _store_cache(path: Path, at: str, state: _State) -> None:
    tmp = path / f".{CACHE_FILE}.tmp"
    tmp.write_text(json.dumps({"tip": at, "first": state.first, "latest": state.latest}, separators=(",", ":")))
    os.replace(tmp, path / CACHE_FILE)


def logged_values(path: Path) -> dict[str, str]:
    """What the log says each ref holds (read under the lock: a consistent tip)."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        return _cached_state(repo, path, tip(repo))[0].latest


def first_time(path: Path) -> str:
    """When the log began (its first entry's time): where the continuity of the controls
    starts, for a repository created here and for one that predates the log alike."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        return _cached_state(repo, path, tip(repo))[0].first or iso_now()


def append(path: Path, key: signing.Signer, entries: Sequence[Entry]) -> list[Logged]:
    """Chain ``entries`` onto the log of the repository at ``path`` and move the log's ref; the
    ones written (an entry for a value the log has already is left out). Each entry's ``old`` is
    the value the log had for its ref, so the log describes itself even when a caller saw an
    older value."""
    with locked(path):
        repo = pygit2.Repository(str(path))
        head = tip(repo)
        state, _fresh = _cached_state(repo, path, head)
        written = _sign_entries(repo, key, head, state, entries)
        if written:
            repo.references.create(LOG_REF, pygit2.Oid(hex=written[-1].commit), force=True)
            _store_cache(path, written[-1].commit, state)
            log.debug("%s: %d log entries, tip %s", path.name, len(written), written[-1].commit)
        return written


def chain(path: Path, key: signing.Signer, entries: Sequence[Entry]) -> Chained:
    """Sign ``entries`` onto the log's tip without moving the log's ref: the caller holds the
    log's lock (gitserver.provenance.loglock) and moves the ref, from ``base`` to the last
    commit, in the same transaction as the refs the entries describe (gitserver.push.refmove).
    Until then the commits are objects nothing names; a transaction that fails leaves them to
    ``git gc``."""
    repo = pygit2.Repository(str(path))
    head = tip(repo)
    state, fresh = _cached_state(repo, path, head)
    if not fresh and head is not None:
        # The state at the tip as it is: the next writer walks only the entries after it.
        _store_cache(path, head, _State(dict(state.latest), state.first))
    return Chained(head, _sign_entries(repo, key, head, state, entries))


def signed_chain(path: Path, key: Callable[[], signing.Signer], entries: Sequence[Entry]) -> Chained:
    """:func:`chain` with the signer ``key()`` loads; LogError names, for whoever reads it,
    what failed (the key unusable, its agent refusing, the commits not written)."""
    try:
        signer = key()
    except keys.SigningKeyError as exc:
        log.error("%s: cannot sign the reference log: %s", path, exc)
        raise LogError(KEY_UNUSABLE) from exc
    try:
        return chain(path, signer, entries)
    except keys.SigningKeyError as exc:  # an ssh-agent that is gone or refuses
        log.error("%s: signing the reference log failed: %s", path, exc)
        raise LogError("signing its entry failed") from exc
    except (OSError, pygit2.GitError) as exc:
        log.error("%s: writing the reference log's commits failed: %s", path, exc)
        raise LogError(f"its commit could not be written ({type(exc).__name__})") from exc


def _sign_entries(repo: pygit2.Repository, key: signing.Signer, head: str | None, state: _State,
                  entries: Sequence[Entry]) -> list[Logged]:
    """Write the signed commits of ``entries`` chained on ``head``, updating ``state``."""
    written: list[Logged] = []
    when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    author = gitsign.Ident(*AUTHOR, when)
    for entry in entries:
        old = state.latest.get(entry.ref, refs.ZERO_OID)
        if old == entry.new:
            continue
        entry = dataclasses.replace(entry, old=old, time=entry.time or iso_now())
        head = gitsign.write_signed_commit(repo, key, _empty_tree(repo), [head] if head else [],
                                           author, entry.message())
        state.latest[entry.ref] = entry.new
        state.first = state.first or entry.time
        written.append(Logged(head, entry))
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
