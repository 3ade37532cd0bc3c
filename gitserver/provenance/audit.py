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

from collections.abc import Callable

import pygit2

from gitserver.git import refs
from gitserver.provenance import attested, ed25519, gitsign, logread, trust
from gitserver.provenance.entry import LOG_REF, Entry, is_logged

Breach = logread.Breach
Reading = logread.Reading
read_log = logread.read_log


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
    with ed25519.Checker() as checker:
        return _tag_problems(repo, trusted, served, checker)()


def _tag_problems(repo: pygit2.Repository, trusted: list[trust.TrustedKey], served: dict[str, str],
                  checker: ed25519.Checker) -> logread.Breaches:
    began = trust.earliest(trusted)
    breaches: list[Breach] = []
    signed: list[tuple[str, trust.Signed]] = []
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
        when = logread.when(tag.tagger.time if tag.tagger is not None else 0)
        split = gitsign.split_signed_tag(repo.odb.read(tag.id)[1])
        if split is not None:
            signed.append((ref, trust.Signed(split[1], split[0], when)))
        elif began is None or when >= began:
            breaches.append((ref, "archive tag is not signed"))
    problems = trust.judge(trusted, [item for _ref, item in signed], checker)
    return lambda: sorted(breaches + [(ref, f"archive tag {problem}") for (ref, _item), problem
                                      in zip(signed, problems(), strict=True) if problem])


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
    """Every breach of the repository's verifiable history, and the log as read.

    Every signature (the log's, the archive tags', the attestations') goes to one checker as
    soon as it is read, and is verified on other threads while the checks that need no
    signature run here; the breaches are gathered, in a fixed order, at the end."""
    with ed25519.Checker() as checker:
        reading, log_breaches = logread.read(repo, trusted, checker)
        tags = _tag_problems(repo, trusted, served, checker)
        attestations = attested.judge(repo, trusted, reading.entries, checker)
        latest, replayed = replay(reading.entries, git_is_ancestor(repo))
        reading.breaches = log_breaches()
        breaches = list(reading.breaches)
        if reading.tip is None and any(is_logged(ref) for ref in served):
            breaches.append((LOG_REF, "missing: the repository has refs but no reference log"))
        breaches += replayed
        breaches += compare_served(latest, served)
        breaches += tags()
        breaches += attestations()
    return breaches, reading
