"""Where a backup cuts a repository's reference log (docs/backup.md, "The reference log"):
the newest entry at which the log agrees with the refs the backup holds.

The backup's refs are the database snapshot's, while the log on disk may already hold entries
of pushes that landed after the snapshot (a push logs its updates in its done transaction,
before that transaction commits). So the log is replayed from its first entry, and the cut is
the last entry after which every ref the log describes has the value the backup holds (a ref
the log deleted: absent from the backup). The restored log ends there; the reconciler's
catch-up after the restore logs whatever the backup's refs hold beyond it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pygit2

from gitserver.backup import format as fmt
from gitserver.backup import repos
from gitserver.backup.ledger import RepoLedger
from gitserver.git import refs as git_refs
from gitserver.policy.errors import BackupError
from gitserver.provenance import logread
from gitserver.provenance.entry import LOG_REF, NOTES_REF, EntryError, parse


@dataclasses.dataclass(frozen=True)
class Cut:
    """The log commit a backup ends the log at, and how many entries that is."""

    commit: str
    entries: int


def find_cut(path: Path, backed_up: Mapping[str, str]) -> Cut | None:
    """The cut of the log of the repository at ``path`` for the refs ``backed_up``; None when
    it has no log, or no entry at which the log agrees with them (the restore starts anew)."""
    repo = pygit2.Repository(str(path))
    ref = repo.references.get(LOG_REF)
    if ref is None:
        return None
    newest_first, _broken = logread.walk(repo, str(ref.target))
    state: dict[str, str] = {}
    differing: set[str] = set()
    cut: Cut | None = None
    for number, commit in enumerate(reversed(newest_first), start=1):
        try:
            entry = parse(commit.message)
        except EntryError:
            continue  # check and verify report it; it changes no ref's value
        state[entry.ref] = entry.new
        if backed_up.get(entry.ref, git_refs.ZERO_OID) == entry.new:
            differing.discard(entry.ref)
        else:
            differing.add(entry.ref)
        if not differing:
            cut = Cut(commit.id, number)
    return cut


def notes_tip(path: Path) -> str | None:
    """The attestations' notes commit as it is now (notes only ever grow: notes of entries past
    the cut are of commits the restored log does not name, and nobody reads them)."""
    ref = pygit2.Repository(str(path)).references.get(NOTES_REF)
    return None if ref is None else str(ref.target)


def with_log(path: Path, ledger: RepoLedger, manifest: fmt.Manifest) -> fmt.RepoRefs:
    """The repository's refs for the backup (:func:`repos.backup_refs`), with its reference log
    at the cut, which the manifest names, and the attestations' notes as they are."""
    held = repos.backup_refs(path, ledger)
    cut = find_cut(path, held.refs)
    if cut is None:
        return held
    manifest.logs[f"{ledger.tenant}/{ledger.name}"] = {"cut": cut.commit, "entries": cut.entries}
    extra = {LOG_REF: cut.commit}
    notes = notes_tip(path)
    if notes is not None:
        extra[NOTES_REF] = notes
    return fmt.RepoRefs(head=held.head, refs={**held.refs, **extra})


def check_cut(manifest: fmt.Manifest, tenant: str, name: str, held: fmt.RepoRefs) -> None:
    """A restore's check of the backup: the log ref of a repository's refs file is the cut its
    manifest names (both or neither)."""
    named, logged = manifest.log_cut(tenant, name), held.refs.get(LOG_REF)
    if named != logged:
        raise BackupError(f"the backup file is not valid: {tenant}/{name}: its refs put {LOG_REF} at "
                          f"{logged or 'nothing'}, its manifest cuts the log at {named or 'nothing'}")
