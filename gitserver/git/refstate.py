"""What a repository's refs look like on disk, cheaply: a fingerprint, the refs themselves,
and leftovers of receive-packs that died (quarantine directories).

The reconciler (gitserver.push.ledger) compares refs on disk with the push ledger. Most
repositories did not change since its last pass, so it first compares a fingerprint made from
``stat`` of ``packed-refs`` and of every directory under ``refs/``: git writes every ref
through ``<ref>.lock`` and a rename, which changes the mtime of the ref's directory, and a
``pack-refs`` rewrites ``packed-refs``. A ref file edited in place by hand is not seen by the
fingerprint; ``gitserver check`` reads every ref and finds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from gitserver.git import refs
from gitserver.policy.names import GIT_SUFFIX

# git names a push's quarantine tmp_objdir-incoming-XXXXXX (older releases incoming-XXXXXX).
QUARANTINE_PREFIXES = ("tmp_objdir-incoming-", "incoming-")


def fingerprint(repo_path: Path) -> str:
    """A digest of the ref storage's metadata; it changes whenever a ref is written by git."""
    digest = hashlib.sha256()
    _stat_into(digest, repo_path / "packed-refs")
    stack = [repo_path / "refs"]
    while stack:
        directory = stack.pop()
        _stat_into(digest, directory)
        try:
            with os.scandir(directory) as entries:
                stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return digest.hexdigest()


def _stat_into(digest: hashlib._Hash, path: Path) -> None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        digest.update(f"{path.name}:-\n".encode())
        return
    digest.update(f"{path.name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}\n".encode())


def read_refs(repo_path: Path) -> dict[str, str]:
    """Every direct ref of the repository (symbolic refs such as HEAD left out): name → oid."""
    import pygit2

    repo = pygit2.Repository(str(repo_path))
    out: dict[str, str] = {}
    for ref in repo.listall_reference_objects():
        target = ref.target
        if isinstance(target, pygit2.Oid):
            out[ref.name] = str(target)
    return out


def written_within(repo_path: Path, ref: str, seconds: float, now: float | None = None) -> bool:
    """True when ``ref`` is a loose ref file written less than ``seconds`` ago."""
    try:
        mtime = os.stat(repo_path / ref, follow_symlinks=False).st_mtime
    except OSError:
        return False  # packed (written by pack-refs, long ago) or gone
    return (time.time() if now is None else now) - mtime < seconds


def ledger_refs(all_refs: dict[str, str]) -> dict[str, str]:
    """The refs the push ledger answers for: all but the archive refs, which the server
    writes itself and records in the Archive table."""
    return {name: oid for name, oid in all_refs.items() if not refs.is_reserved(name)}


def stale_quarantines(repo_path: Path, older_than: float, now: float | None = None) -> list[Path]:
    """Quarantine directories of ``repo_path`` in which nothing changed for ``older_than``
    seconds: a live receive-pack writes into its quarantine, or has moved it away, long before."""
    now = time.time() if now is None else now
    objects = repo_path / "objects"
    found = []
    try:
        with os.scandir(objects) as entries:
            candidates = [Path(e.path) for e in entries
                          if e.name.startswith(QUARANTINE_PREFIXES) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for path in candidates:
        if now - _newest_mtime(path) >= older_than:
            found.append(path)
    return found


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files, "."]:
            try:
                newest = max(newest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
            except OSError:
                continue
    return newest


def remove_stale_quarantines(repos_root: Path, older_than: float) -> list[Path]:
    """Remove the stale quarantine directories and ref lock files of every repository under
    ``repos_root``."""
    removed = []
    try:
        tenants = [Path(e.path) for e in os.scandir(repos_root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for tenant in tenants:
        try:
            repos = [Path(e.path) for e in os.scandir(tenant)
                     if e.name.endswith(GIT_SUFFIX) and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for repo in repos:
            for path in stale_quarantines(repo, older_than):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            for path in stale_ref_locks(repo, older_than):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def ref_locks(repo_path: Path) -> list[Path]:
    """The ref lock files there are (``refs/**/*.lock``, ``packed-refs.lock``): git holds one
    for the moment of one write; one that stays was left by a writer that was killed."""
    found = [repo_path / "packed-refs.lock"] if os.path.lexists(repo_path / "packed-refs.lock") else []
    for root, _dirs, files in os.walk(repo_path / "refs"):
        found += [Path(root) / name for name in files if name.endswith(".lock")]
    return found


def stale_ref_locks(repo_path: Path, older_than: float, now: float | None = None) -> list[Path]:
    """Ref lock files older than ``older_than`` seconds: left by a git or pygit2 writer that
    was killed; git never removes them, and every later write of that ref would fail."""
    now = time.time() if now is None else now
    found = []
    for path in ref_locks(repo_path):
        try:
            if now - os.stat(path, follow_symlinks=False).st_mtime >= older_than:
                found.append(path)
        except OSError:
            continue
    return found
