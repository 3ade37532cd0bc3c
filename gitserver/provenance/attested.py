"""Whether the reference log's pushed updates have their attestations (part of
:mod:`gitserver.provenance.audit`): every accepted branch or tag update in the log has its
signed source provenance in ``refs/notes/attestations``, and every envelope there verifies.

The notes tree is read once (an index of commit → note blob, instead of one libgit2 note
lookup per entry, which walks the notes tree again each time), the notes' blobs are read by
one ``git cat-file --batch``, and every envelope's signature is checked in one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2

from gitserver.git import catfile, refs
from gitserver.provenance import attest, dsse, ed25519, trust
from gitserver.provenance.entry import NOTES_REF, PROTOCOL_RECOVERED, Entry

Breach = tuple[str, str]  # (ref, what), as audit's
OID_HEX = 40
FANOUT_HEX = 2  # git notes' fan-out directories: two hex digits of the annotated object's id
# From this many notes on, one ``git cat-file --batch`` reads them (its delta cache pays for
# the process); fewer are read through libgit2.
CAT_FILE_FROM = 64


def problems(repo: pygit2.Repository, trusted: list[trust.TrustedKey],
             entries: list[tuple[str, Entry]]) -> list[Breach]:
    """The pushed updates in the log without their signed source provenance in the notes, and
    notes whose envelopes do not verify. Entries before the first attested one predate
    attestations (a repository older than them), and are left alone."""
    with ed25519.Checker() as checker:
        return judge(repo, trusted, entries, checker)()


def judge(repo: pygit2.Repository, trusted: list[trust.TrustedKey], entries: list[tuple[str, Entry]],
          checker: ed25519.Checker) -> Callable[[], list[Breach]]:
    """:func:`problems`, the envelopes' signatures handed to ``checker``: a function that
    waits for them and answers the breaches."""
    wanted = [(cid, entry, subject) for cid, entry in entries if attestable(entry)
              and (subject := attest.subject_of(repo, entry)) is not None]
    statements = _statements(repo, list(dict.fromkeys(s.commit for _c, _e, s in wanted)),
                             [k.blob for k in trusted], checker)

    def breaches() -> list[Breach]:
        found, named = statements()
        expected = False
        for cid, entry, subject in wanted:
            attested = cid in named.get(subject.commit, set())
            expected = expected or attested
            if expected and not attested:
                found.append((entry.ref, f"no signed attestation for log entry {cid[:12]} "
                                         f"(commit {subject.commit[:12]})"))
        return found
    return breaches


def attestable(entry: Entry) -> bool:
    """Whether the update was a push that must carry attestations."""
    return (entry.push_id is not None and entry.protocol != PROTOCOL_RECOVERED and not refs.is_zero(entry.new)
            and entry.ref.startswith(refs.PUSHABLE_PREFIXES))


def notes_index(repo: pygit2.Repository) -> dict[str, pygit2.Oid]:
    """Every annotated object's id → its note's blob, from one walk of the notes tree (with
    git's fan-out directories: ``ab/cdef…`` is the note of ``abcdef…``)."""
    ref = repo.references.get(NOTES_REF)
    if ref is None:
        return {}
    try:
        tree = repo[ref.target].peel(pygit2.Tree)
    except (KeyError, ValueError, pygit2.GitError):
        return {}
    index: dict[str, pygit2.Oid] = {}
    stack: list[tuple[pygit2.Tree, str]] = [(tree, "")]
    while stack:
        tree, prefix = stack.pop()
        for item in tree:
            name = prefix + (item.name or "")
            if isinstance(item, pygit2.Tree) and len(item.name or "") == FANOUT_HEX and len(name) < OID_HEX:
                stack.append((item, name))
            elif isinstance(item, pygit2.Blob) and len(name) == OID_HEX:
                index[name.lower()] = item.id
    return index


def _statements(repo: pygit2.Repository, commits: list[str], blobs: list[bytes],
                checker: ed25519.Checker) -> Callable[[], tuple[list[Breach], dict[str, set[str]]]]:
    """A function answering the notes' breaches and, for each commit, the log entries its
    note's verified statements name."""
    lines: list[tuple[str, Any]] = []
    unreadable: list[Breach] = []
    for commit, text in _notes(repo, commits).items():
        for line in text.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                lines.append((commit, json.loads(line)))
            except ValueError as exc:
                unreadable.append(_bad(commit, dsse.EnvelopeError(f"not JSON: {exc}")))
    opened = dsse.opener([env for _c, env in lines], blobs, checker)

    def statements() -> tuple[list[Breach], dict[str, set[str]]]:
        breaches = list(unreadable)
        named: dict[str, set[str]] = {}
        for (commit, _env), statement in zip(lines, opened(), strict=True):
            if isinstance(statement, dsse.EnvelopeError):
                breaches.append(_bad(commit, statement))
                continue
            subjects = statement.get("subject") or [{}]
            if not isinstance(subjects, list) or _digest(subjects[0]) != commit:
                breaches.append((NOTES_REF, f"an attestation in the note of {commit[:12]} is about another commit"))
                continue
            predicate = statement.get("predicate")
            if isinstance(predicate, dict) and isinstance(predicate.get("log_entry"), str):
                named.setdefault(commit, set()).add(predicate["log_entry"])
        return breaches, named
    return statements


def _notes(repo: pygit2.Repository, commits: list[str]) -> dict[str, bytes]:
    """The notes of those of ``commits`` that have one, in that order."""
    index = notes_index(repo) if commits else {}
    blobs = {commit: str(index[commit]) for commit in commits if commit in index}
    if len(blobs) < CAT_FILE_FROM:
        return {commit: repo.odb.read(blob)[1] for commit, blob in blobs.items()}
    texts = catfile.contents(Path(repo.path), list(blobs.values()))
    return {commit: texts[blob] for commit, blob in blobs.items() if blob in texts}


def _digest(subject: Any) -> Any:
    return subject.get("digest", {}).get("gitCommit") if isinstance(subject, dict) else None


def _bad(commit: str, exc: Exception) -> Breach:
    return (NOTES_REF, f"an attestation of commit {commit[:12]} does not verify ({exc})")
