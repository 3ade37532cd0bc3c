"""One repository in a backup: its refs (from the ledger) and one pack of what they reach.

The pack is made by ``git pack-objects`` from the recorded ref values, so it holds exactly the
objects those refs need, whatever pushes add meanwhile; a recorded value whose objects are
missing makes pack-objects fail and the backup with it, instead of producing a backup that
cannot be restored.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import BinaryIO

import pygit2

from gitserver.backup import format as fmt
from gitserver.backup.ledger import RepoLedger
from gitserver.git import archive as git_archive
from gitserver.git import refs as git_refs
from gitserver.git.store import GIT, RepoStore, git_env
from gitserver.policy.errors import BackupError

GIT_TIMEOUT = 24 * 3600.0


def backup_refs(path: Path, ledger: RepoLedger) -> fmt.RepoRefs:
    """The refs the backup holds for one repository: the recorded refs, and the archive tags
    (and their branches) of its Archive rows, checked against the repository on disk."""
    try:
        repo = pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        raise BackupError(f"repository {ledger.tenant}/{ledger.name} is missing or unreadable at {path}") from exc
    refs = dict(ledger.refs)
    for tag, commit_id in ledger.archives:
        # Archive tags are written once before their row and never move, so the live tag of a
        # row in the snapshot is the tag as it was at the snapshot.
        tag_ref = repo.references.get(git_refs.TAGS + tag)
        if tag_ref is None or str(tag_ref.peel(pygit2.Commit).id) != commit_id:
            raise BackupError(f"{ledger.tenant}/{ledger.name}: archive tag {tag} does not name the "
                              f"recorded commit {commit_id} (run `gitserver check`)")
        refs[git_refs.TAGS + tag] = str(tag_ref.target)
        branch = repo.references.get(git_refs.HEADS + git_archive.branch_name(commit_id))
        if branch is not None and str(branch.target) == commit_id:
            refs[branch.name] = commit_id
    head = fmt.DEFAULT_HEAD
    head_ref = repo.references.get("HEAD")
    if head_ref is not None and head_ref.type == pygit2.enums.ReferenceType.SYMBOLIC:
        head = str(head_ref.target)
    return fmt.RepoRefs(head=head, refs=refs)


def write_pack(path: Path, tips: list[str], out: Path, what: str) -> None:
    """One pack of every object reachable from ``tips`` in the repository at ``path``."""
    stdin = "".join(f"{oid}\n" for oid in sorted(set(tips)))
    with out.open("wb") as fh:
        result = subprocess.run([GIT, "--git-dir", str(path), "pack-objects", "--stdout", "--revs",
                                 "--delta-base-offset", "-q"],
                                input=stdin.encode(), stdout=fh, stderr=subprocess.PIPE,
                                env=git_env(), timeout=GIT_TIMEOUT)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise BackupError(f"{what}: could not pack the recorded refs' objects: {detail[0]}")


def restore_repo(store: RepoStore, tenant: str, name: str, refs: fmt.RepoRefs, pack: Path | None) -> Path:
    """Create the repository under ``store`` with the protected config, its objects and refs."""
    path = store.create(tenant, name)
    what = f"{tenant}/{name}"
    if pack is not None:
        with pack.open("rb") as fh:
            _git(path, what, "index-pack", "--stdin", stdin=fh)
    if refs.refs:
        script = "".join(f"create {ref} {oid}\n" for ref, oid in sorted(refs.refs.items()))
        _git(path, what, "update-ref", "--stdin", data=script.encode())
    _git(path, what, "symbolic-ref", "HEAD", refs.head)
    if refs.refs:
        # Every object every ref reaches is there (update-ref checked only the tips).
        _git(path, what, "rev-list", "--objects", "--all", "--quiet")
    return path


def disk_refs(path: Path) -> dict[str, str]:
    """Every ref of the repository at ``path`` and its object id."""
    repo = pygit2.Repository(str(path))
    out = {}
    for name in repo.references:
        if name.startswith("refs/"):
            out[name] = str(repo.references[name].target)
    return out


def _git(path: Path, what: str, *args: str, stdin: BinaryIO | None = None, data: bytes | None = None) -> None:
    result = subprocess.run([GIT, "--git-dir", str(path), *args], stdin=stdin, input=data,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=git_env(),
                            timeout=GIT_TIMEOUT)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise BackupError(f"{what}: git {args[0]} failed: {detail[0]}")
