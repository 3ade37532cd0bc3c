"""Reading the reference log for its checks (part of :mod:`gitserver.provenance.audit`): from
its tip back to its first entry, each commit read once (its raw bytes give the parents, the
date, the signature and the entry), and every entry's signature handed to one
:class:`~gitserver.provenance.ed25519.Checker`, so the other checks go on while they verify.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pygit2

from gitserver.provenance import ed25519, gitsign, rawcommit, trust
from gitserver.provenance.entry import LOG_REF, Entry, EntryError, parse

Breach = tuple[str, str]  # (ref, what), as audit's
Breaches = Callable[[], list[Breach]]


@dataclasses.dataclass
class Reading:
    """The log as read: its entries oldest first (commit id, entry) and what was wrong."""

    tip: str | None = None
    entries: list[tuple[str, Entry]] = dataclasses.field(default_factory=list)
    commits: list[str] = dataclasses.field(default_factory=list)  # every commit id, oldest first
    breaches: list[Breach] = dataclasses.field(default_factory=list)


def when(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def read_log(repo: pygit2.Repository, trusted: list[trust.TrustedKey]) -> Reading:
    """The log, its breaches included."""
    with ed25519.Checker() as checker:
        reading, breaches = read(repo, trusted, checker)
        reading.breaches = breaches()
    return reading


def read(repo: pygit2.Repository, trusted: list[trust.TrustedKey],
         checker: ed25519.Checker) -> tuple[Reading, Breaches]:
    """The log's entries and commits, and a function that waits for the signatures and
    answers the log's breaches (shape, signatures, entries), newest entry first."""
    reading = Reading()
    ref = repo.references.get(LOG_REF)
    if ref is None:
        return reading, list
    reading.tip = str(ref.target)
    newest_first, broken = walk(repo, reading.tip)
    judged = _judge(newest_first, trusted, checker)
    unreadable: dict[str, Breach] = {}
    for commit in reversed(newest_first):
        reading.commits.append(commit.id)
        try:
            reading.entries.append((commit.id, parse(commit.message)))
        except EntryError as exc:
            unreadable[commit.id] = (LOG_REF, f"entry {commit.id}: {exc}")

    def breaches() -> list[Breach]:
        found: list[Breach] = []
        for commit, shape in zip(newest_first, judged(), strict=True):
            found += shape
            if commit.id in unreadable:
                found.append(unreadable[commit.id])
        return found + broken
    return reading, breaches


def walk(repo: pygit2.Repository, tip: str) -> tuple[list[rawcommit.RawCommit], list[Breach]]:
    """The log's commits, newest first, and why the walk stopped short of a first entry."""
    commits: list[rawcommit.RawCommit] = []
    oid: str | None = tip
    while oid is not None:
        try:
            kind, raw = repo.odb.read(oid)
        except (KeyError, ValueError):
            return commits, [(LOG_REF, f"entry {oid} is missing (the chain is broken)")]
        if kind != pygit2.enums.ObjectType.COMMIT:
            return commits, [(LOG_REF, f"{oid} is not a commit")]
        commit = rawcommit.parse(oid, raw)
        commits.append(commit)
        oid = commit.parents[0] if commit.parents else None
    return commits, []


def _judge(commits: list[rawcommit.RawCommit], trusted: list[trust.TrustedKey],
           checker: ed25519.Checker) -> Callable[[], list[list[Breach]]]:
    """Each log commit's breaches of shape and signature, once its signature is checked."""
    signed = [(c, gitsign.split_signed_commit(c.raw)) for c in commits]
    problems = trust.judge(trusted, [trust.Signed(split[1], split[0], when(c.time))
                                     for c, split in signed if split is not None], checker)

    def judged() -> list[list[Breach]]:
        verdicts = iter(problems())
        out = []
        for commit, split in signed:
            found: list[Breach] = []
            if len(commit.parents) > 1:
                found.append((LOG_REF, f"entry {commit.id} has {len(commit.parents)} parents (not one chain)"))
            if split is None:
                found.append((LOG_REF, f"entry {commit.id} is not signed"))
            elif problem := next(verdicts):
                found.append((LOG_REF, f"entry {commit.id}: {problem}"))
            out.append(found)
        return out
    return judged
