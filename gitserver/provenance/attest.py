"""Attestations of each accepted branch or tag update (docs/provenance.md, "Attestations"):
source provenance and a Source VSA, in-toto Statements v1 in DSSE envelopes, written at push
time as lines of a git note on the commit in ``refs/notes/attestations`` (an in-toto bundle:
one envelope per line).

The formats are slsa-framework/source-tool's, so its verifiers read ours: the source
provenance predicate (``activity_type``, ``actor``, ``branch`` or ``tag``, ``controls`` with
their ``since``, ``created_on``, ``prev_commit``, ``repo_uri``) with gitserver's own fields
beside them (the key, the protocol, the push and the reference-log entry), and the VSA of
https://slsa.dev/verification_summary/v1.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pygit2

from gitserver.git import refs
from gitserver.provenance import dsse, orgprops, reflog
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import NOTES_REF, Entry, iso_now

log = logging.getLogger(__name__)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SOURCE_PROVENANCE_TYPE = "https://github.com/slsa-framework/source-tool/source-provenance/v1"
TAG_PROVENANCE_TYPE = "https://github.com/slsa-framework/source-tool/tag-provenance/v1"
VSA_TYPE = "https://slsa.dev/verification_summary/v1"
BUNDLE_MEDIA_TYPE = "application/vnd.in-toto.bundle"
# §4's history rules hold for every ref of every repository, and cannot be switched off: no
# delete, no non-fast-forward, no moved tag; and every update has this provenance.
CONTROLS = ("CONTINUITY_ENFORCED", "TAG_HYGIENE", "PROVENANCE_AVAILABLE")
# Source L3: continuity, tag hygiene and contemporaneous signed provenance. L4 would need
# two-party review, which gitserver does not enforce.
LEVEL = "SLSA_SOURCE_LEVEL_3"
ACTIVITY_PUSH = "push"
NOTES_AUTHOR = ("gitserver", "gitserver@localhost")


@dataclasses.dataclass(frozen=True)
class Subject:
    """What a statement is about: the commit an update set (a tag's: the commit it names)."""

    commit: str
    previous: str | None  # the commit the ref named before (None: created)


def subject_of(repo: pygit2.Repository, entry: Entry) -> Subject | None:
    commit = _peel(repo, entry.new)
    if commit is None:
        return None  # a tag of a tree or a blob: no commit to attest
    return Subject(commit, None if refs.is_zero(entry.old) else _peel(repo, entry.old))


def _peel(repo: pygit2.Repository, oid: str) -> str | None:
    try:
        found = repo[oid].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    return str(found.id)


def statements(entry: Entry, log_commit: str, subject: Subject, since: str, repo_uri: str,
               verifier: str, properties: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The source provenance and the VSA of one logged update (pure); ``properties`` are the
    organisation's ``ORG_SOURCE_*`` the rules give it (gitserver.provenance.orgprops)."""
    now = entry.time or iso_now()
    controls = [{"name": name, "since": since} for name in CONTROLS]
    predicate: dict[str, Any] = {
        "activity_type": ACTIVITY_PUSH, "actor": entry.pusher, "controls": controls, "created_on": now,
        "prev_commit": subject.previous, "repo_uri": repo_uri,
        "key_fingerprint": entry.key_fingerprint, "protocol": entry.protocol, "push_id": entry.push_id,
        "ref": entry.ref, "log_entry": log_commit, "rules": entry.rules,
    }
    is_tag = refs.is_tag(entry.ref)
    predicate["tag" if is_tag else "branch"] = entry.ref
    digest = [{"digest": {"gitCommit": subject.commit}}]
    provenance = {"_type": STATEMENT_TYPE, "subject": digest,
                  "predicateType": TAG_PROVENANCE_TYPE if is_tag else SOURCE_PROVENANCE_TYPE,
                  "predicate": predicate}
    vsa = {"_type": STATEMENT_TYPE, "subject": digest, "predicateType": VSA_TYPE, "predicate": {
        "verifier": {"id": verifier}, "timeVerified": now, "resourceUri": f"git+{repo_uri}",
        "policy": {"uri": f"{verifier}/docs/provenance.md#attestations"},
        "verificationResult": "PASSED", "verifiedLevels": [LEVEL, *properties],
        "source_refs": [entry.ref]}}
    return [provenance, vsa]


def attest(path: Path, key: signing.Signer, logged: list[reflog.Logged], repo_uri: str,
           verifier: str, properties: orgprops.Properties = orgprops.none) -> int:
    """Sign and store the attestations of the branch and tag updates in ``logged``; how many
    envelopes were written. Runs under the log's lock, so notes writers take turns too.
    ``properties`` gives each update's ``ORG_SOURCE_*`` (:func:`orgprops.lookup`)."""
    repo = pygit2.Repository(str(path))
    lines: dict[str, list[str]] = {}
    since = reflog.first_time(path)
    for item in logged:
        entry = item.entry
        if not entry.ref.startswith(refs.PUSHABLE_PREFIXES) or refs.is_reserved(entry.ref) or refs.is_zero(entry.new):
            continue
        subject = subject_of(repo, entry)
        if subject is None:
            continue
        for statement in statements(entry, item.commit, subject, since, repo_uri, verifier, properties(entry)):
            lines.setdefault(subject.commit, []).append(json.dumps(dsse.envelope(key, statement),
                                                                   separators=(",", ":")))
    with reflog.locked(path):
        for commit, new in lines.items():
            _add_note(repo, commit, new)
    return sum(len(v) for v in lines.values())


def _add_note(repo: pygit2.Repository, commit: str, lines: list[str]) -> None:
    """Append ``lines`` to the commit's note (a commit pushed to two refs gets both)."""
    try:
        old = repo.lookup_note(commit, NOTES_REF).message
    except KeyError:
        old = ""
    text = old + "".join(line + "\n" for line in lines)
    who = pygit2.Signature(*NOTES_AUTHOR)
    repo.create_note(text, who, who, commit, NOTES_REF, True)


def read_bundle(path: Path, commit: str) -> str | None:
    """The note of ``commit``: its in-toto bundle, or None."""
    repo = pygit2.Repository(str(path))
    try:
        return repo.lookup_note(commit, NOTES_REF).message
    except (KeyError, ValueError, pygit2.GitError):
        return None


# How many of the newest pushed entries :func:`unattested` looks at: a push that died between
# its log entry and its note is among the last few pushed. The server's own entries (archive
# tags and branches, several per push) between them do not count, or a busy pipeline would push
# an unattested entry out of sight.
RECENT_ENTRIES = 50


def unattested(path: Path, limit: int = RECENT_ENTRIES) -> list[reflog.Logged]:
    """The newest log entries of accepted branch and tag updates whose note holds no statement
    naming them: written by a process that died before it stored their attestations."""
    from gitserver.provenance.entry import PROTOCOL_RECOVERED, EntryError, parse

    repo = pygit2.Repository(str(path))
    found = []
    seen = 0
    for commit in reflog.walk(repo, reflog.tip(repo)):
        if seen >= limit:
            break
        try:
            entry = parse(commit.message)
        except EntryError:
            continue  # check and verify report it
        if entry.push_id is None or entry.protocol == PROTOCOL_RECOVERED or refs.is_zero(entry.new) \
                or not entry.ref.startswith(refs.PUSHABLE_PREFIXES) or refs.is_reserved(entry.ref):
            continue
        seen += 1
        subject = subject_of(repo, entry)
        if subject is not None and str(commit.id) not in _named_entries(repo, subject.commit):
            found.append(reflog.Logged(str(commit.id), entry))
    return found


def _named_entries(repo: pygit2.Repository, commit: str) -> set[str]:
    """The log entries the statements in ``commit``'s note name (not verified: ours to mend)."""
    try:
        text = repo.lookup_note(commit, NOTES_REF).message
    except (KeyError, ValueError, pygit2.GitError):
        return set()
    named = set()
    for line in text.splitlines():
        try:
            payload = json.loads(base64.b64decode(json.loads(line)["payload"]))
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("predicate"), dict):
            named.add(str(payload["predicate"].get("log_entry")))
    return named
