"""The checks of a repository's verifiable history, shared by ``gitserver verify`` (a mirror
clone, the published keys) and ``gitserver check`` (the repository on disk, the key history):

* every log entry is signed by a trusted key within its window, and the log is one chain;
* each entry's ``old`` is what the entry before it set; no branch moved backwards, no tag
  moved, nothing was deleted;
* the refs as served equal the log's latest entries;
* every archive tag is signed (or predates signing, and the log covers it);
* every pushed update in the log has its signed source provenance in the notes.

Each breach is a ``(ref, what)`` pair; the caller prefixes it (a repository name) and prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pygit2

from gitserver.git import refs
from gitserver.provenance import attest, dsse, gitsign, trust
from gitserver.provenance.entry import LOG_REF, NOTES_REF, PROTOCOL_RECOVERED, Entry, EntryError, is_logged, parse

Breach = tuple[str, str]


@dataclasses.dataclass
class Reading:
    """The log as read: its entries oldest first (commit id, entry) and what was wrong."""

    tip: str | None = None
    entries: list[tuple[str, Entry]] = dataclasses.field(default_factory=list)
    commits: list[str] = dataclasses.field(default_factory=list)  # every commit id, oldest first
    breaches: list[Breach] = dataclasses.field(default_factory=list)


def _when(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def read_log(repo: pygit2.Repository, trusted: list[trust.TrustedKey]) -> Reading:
    reading = Reading()
    ref = repo.references.get(LOG_REF)
    if ref is None:
        return reading
    reading.tip = str(ref.target)
    oid: str | None = reading.tip
    newest_first: list[tuple[str, Entry | None]] = []
    while oid is not None:
        try:
            commit = repo[oid]
        except KeyError:
            reading.breaches.append((LOG_REF, f"entry {oid} is missing (the chain is broken)"))
            break
        if not isinstance(commit, pygit2.Commit):
            reading.breaches.append((LOG_REF, f"{oid} is not a commit"))
            break
        if len(commit.parent_ids) > 1:
            reading.breaches.append((LOG_REF, f"entry {oid} has {len(commit.parent_ids)} parents (not one chain)"))
        newest_first.append((oid, _entry(repo, commit, trusted, reading)))
        oid = str(commit.parent_ids[0]) if commit.parent_ids else None
    for cid, entry in reversed(newest_first):
        reading.commits.append(cid)
        if entry is not None:
            reading.entries.append((cid, entry))
    return reading


def _entry(repo: pygit2.Repository, commit: pygit2.Commit, trusted: list[trust.TrustedKey],
           reading: Reading) -> Entry | None:
    cid = str(commit.id)
    split = gitsign.split_signed_commit(repo.odb.read(commit.id)[1])
    if split is None:
        reading.breaches.append((LOG_REF, f"entry {cid} is not signed"))
    else:
        problem = trust.signature_problem(trusted, split[1], split[0], _when(commit.commit_time))
        if problem:
            reading.breaches.append((LOG_REF, f"entry {cid}: {problem}"))
    try:
        return parse(commit.message)
    except EntryError as exc:
        reading.breaches.append((LOG_REF, f"entry {cid}: {exc}"))
        return None


def replay(entries: list[tuple[str, Entry]],
           is_ancestor: Callable[[str, str], bool]) -> tuple[dict[str, str], list[Breach]]:
    """Each ref's latest value, and the entries that break §4's rules or the chain of values."""
    latest: dict[str, str] = {}
    breaches: list[Breach] = []
    for cid, entry in entries:
        before = latest.get(entry.ref, refs.ZERO_OID)
        where = f"(log entry {cid[:12]})"
        if entry.old != before:
            breaches.append((entry.ref, f"log entry {cid[:12]} says it was {entry.old[:12]}, the entry "
                                        f"before says {before[:12]}"))
        if refs.is_zero(entry.new):
            breaches.append((entry.ref, f"deleted {where}"))
        elif not refs.is_zero(before) and refs.is_tag(entry.ref):
            breaches.append((entry.ref, f"tag moved from {before[:12]} to {entry.new[:12]} {where}"))
        elif not refs.is_zero(before) and not is_ancestor(before, entry.new):
            breaches.append((entry.ref, f"moved backwards (not a fast-forward) from {before[:12]} to "
                                        f"{entry.new[:12]} {where}"))
        latest[entry.ref] = entry.new
    return latest, breaches


def compare_served(latest: dict[str, str], served: dict[str, str]) -> list[Breach]:
    """The refs whose served value is not the log's latest."""
    breaches = []
    for ref, value in sorted(served.items()):
        if not is_logged(ref):
            continue
        logged = latest.get(ref)
        if logged != value:
            said = f"the log's latest entry says {logged[:12]}" if logged else "the log has no entry for it"
            breaches.append((ref, f"served at {value[:12]}, but {said}"))
    for ref, value in sorted(latest.items()):
        if ref not in served and not refs.is_zero(value):
            breaches.append((ref, f"in the log at {value[:12]}, but not served"))
    return breaches


def tag_problems(repo: pygit2.Repository, trusted: list[trust.TrustedKey], served: dict[str, str]) -> list[Breach]:
    """Archive tags (``refs/tags/repour-*``) that are not signed by a trusted key in its window.
    A tag dated before the first key's window predates signing: the log covers it instead."""
    began = trust.earliest(trusted)
    breaches = []
    for ref, value in sorted(served.items()):
        if not ref.startswith(refs.TAGS + refs.RESERVED_TAG_PREFIX):
            continue
        try:
            tag = repo[value]
        except KeyError:
            breaches.append((ref, f"archive tag object {value[:12]} is missing"))
            continue
        if not isinstance(tag, pygit2.Tag):
            breaches.append((ref, "archive tag is not an annotated tag"))
            continue
        when = _when(tag.tagger.time) if tag.tagger is not None else _when(0)
        split = gitsign.split_signed_tag(repo.odb.read(tag.id)[1])
        if split is None:
            if began is None or when >= began:
                breaches.append((ref, "archive tag is not signed"))
            continue
        problem = trust.signature_problem(trusted, split[1], split[0], when)
        if problem:
            breaches.append((ref, f"archive tag {problem}"))
    return breaches


# Commits a walk from the new value may visit looking for the old one before asking libgit2.
ANCESTRY_WALK_LIMIT = 1000


def git_is_ancestor(repo: pygit2.Repository) -> Callable[[str, str], bool]:
    """``is_ancestor(old, new)`` over ``repo``; an ``old`` the repository does not hold cannot
    be an ancestor of a value it serves (a clone would have fetched it).

    A push usually adds a few commits: a short walk back from ``new`` finds ``old`` at once.
    libgit2's ``descendant_of`` answers everything else (it computes a merge base, which
    without a commit-graph can walk the whole history: ten thousand log entries on one branch
    would cost minutes that way)."""
    def is_ancestor(old: str, new: str) -> bool:
        if old == new:
            return True
        try:
            return _found_by_walking(repo, old, new) or bool(repo.descendant_of(new, old))
        except (KeyError, ValueError, pygit2.GitError):
            return False
    return is_ancestor


def _found_by_walking(repo: pygit2.Repository, old: str, new: str) -> bool:
    queue, seen = [new], {new}
    while queue and len(seen) < ANCESTRY_WALK_LIMIT:
        commit = repo[queue.pop(0)]
        if not isinstance(commit, pygit2.Commit):
            return False
        for parent in commit.parent_ids:
            oid = str(parent)
            if oid == old:
                return True
            if oid not in seen:
                seen.add(oid)
                queue.append(oid)
    return False


def audit(repo: pygit2.Repository, trusted: list[trust.TrustedKey],
          served: dict[str, str]) -> tuple[list[Breach], Reading]:
    """Every breach of the repository's verifiable history, and the log as read."""
    reading = read_log(repo, trusted)
    breaches = list(reading.breaches)
    if reading.tip is None and any(is_logged(ref) for ref in served):
        breaches.append((LOG_REF, "missing: the repository has refs but no reference log"))
    latest, replayed = replay(reading.entries, git_is_ancestor(repo))
    breaches += replayed
    breaches += compare_served(latest, served)
    breaches += tag_problems(repo, trusted, served)
    breaches += attestation_problems(repo, trusted, reading)
    return breaches, reading


def attestation_problems(repo: pygit2.Repository, trusted: list[trust.TrustedKey],
                         reading: Reading) -> list[Breach]:
    """The pushed updates in the log without their signed source provenance in the notes, and
    notes whose envelopes do not verify. Entries before the first attested one predate
    attestations (a repository older than them), and are left alone."""
    blobs = [k.blob for k in trusted]
    cache: dict[str, list[dict[str, Any]]] = {}
    breaches: list[Breach] = []
    expected = False
    for cid, entry in reading.entries:
        if entry.push_id is None or entry.protocol == PROTOCOL_RECOVERED or refs.is_zero(entry.new) \
                or not entry.ref.startswith(refs.PUSHABLE_PREFIXES):
            continue
        commit = attest.subject_of(repo, entry)
        if commit is None:
            continue
        if commit.commit not in cache:
            cache[commit.commit] = _statements(repo, commit.commit, blobs, breaches)
        found = any(s.get("predicate", {}).get("log_entry") == cid for s in cache[commit.commit])
        expected = expected or found
        if expected and not found:
            breaches.append((entry.ref, f"no signed attestation for log entry {cid[:12]} "
                                        f"(commit {commit.commit[:12]})"))
    return breaches


def _statements(repo: pygit2.Repository, commit: str, blobs: list[bytes],
                breaches: list[Breach]) -> list[dict[str, Any]]:
    try:
        text = repo.lookup_note(commit, NOTES_REF).message
    except (KeyError, ValueError, pygit2.GitError):
        return []
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            statement = dsse.open_envelope(json.loads(line), blobs)
        except (ValueError, dsse.EnvelopeError) as exc:
            breaches.append((NOTES_REF, f"an attestation of commit {commit[:12]} does not verify ({exc})"))
            continue
        subjects = statement.get("subject") or [{}]
        if subjects[0].get("digest", {}).get("gitCommit") != commit:
            breaches.append((NOTES_REF, f"an attestation in the note of {commit[:12]} is about another commit"))
            continue
        out.append(statement)
    return out
