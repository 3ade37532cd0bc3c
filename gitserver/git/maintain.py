"""Repository maintenance: repack the packs pushes leave behind, write bitmaps and a
commit-graph (docs/maintenance.md).

Repositories run with ``gc.auto=0`` (gitserver.git.store.PROTECTED_CONFIG): git never packs
them on its own, so every push leaves one more pack (or loose objects, under
``transfer.unpackLimit``) and there is no reachability bitmap or commit-graph to serve clones
from. :func:`maintain` fixes that with two commands that never delete an object:

* ``git repack --geometric=2 -d --write-midx --write-bitmap-index``: packs are rolled up until
  their sizes form a geometric progression; loose objects are rolled up with them "without
  respect to their reachability" (git-repack(1)), and ``-d`` removes only the packs and loose
  objects that are now in the new pack. Nothing is judged unreachable, so an object that a
  concurrent push has just written, or that only an archive tag reaches, is never dropped —
  unlike ``-a -d``, which rewrites everything from the refs it saw at its start and loses
  what a push referenced after that. A push's pack, arriving while this runs, is not among
  the packs being rolled up and stays. The multi-pack index carries the bitmap.
* ``git commit-graph write --reachable --split``: an incremental commit-graph (a new layer
  beside the old ones, each written to a temporary file and renamed).

git writes each file to a temporary name and renames it, so a failure or a timeout leaves
the repository as it was (at worst a stray ``.tmp`` file git ignores). Two maintenance runs
on one repository never overlap: each holds an exclusive ``flock`` on
``<repo>/gitserver-maintenance.lock`` (a run that finds it held reports :class:`Busy`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import subprocess
from pathlib import Path

from gitserver.git.store import COMPAT_CONFIG, GIT, PROTECTED_CONFIG, git_env
from gitserver.process import children

LOCK_NAME = "gitserver-maintenance.lock"
REPACK = ("repack", "--geometric=2", "-d", "--write-midx", "--write-bitmap-index", "-q")
COMMIT_GRAPH = ("commit-graph", "write", "--reachable", "--split", "--no-progress")


class MaintenanceError(Exception):
    """A git command of the maintenance failed or timed out; the repository is unchanged."""


class Busy(MaintenanceError):
    """Another maintenance run holds this repository's lock."""


@dataclasses.dataclass(frozen=True)
class Stats:
    """What a repository's object store looks like: cheap to read (directory listings)."""

    packs: int
    loose: int
    bitmap: bool
    commit_graph: bool


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a repository needs maintenance (0 turns a threshold off)."""

    packs: int
    loose: int


def stats(repo_path: Path) -> Stats:
    """Count packs and loose objects and see whether a bitmap and a commit-graph exist."""
    objects = repo_path / "objects"
    pack_dir = objects / "pack"
    names = os.listdir(pack_dir) if pack_dir.is_dir() else []
    packs = sum(1 for n in names if n.startswith("pack-") and n.endswith(".pack"))
    bitmap = any(n.endswith(".bitmap") for n in names)
    loose = 0
    for entry in os.scandir(objects) if objects.is_dir() else ():
        if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
            try:
                loose += sum(1 for _ in os.scandir(entry.path))
            except FileNotFoundError:  # emptied and removed by a repack running meanwhile
                continue
    info = objects / "info"
    graph = (info / "commit-graph").is_file() or (info / "commit-graphs" / "commit-graph-chain").is_file()
    return Stats(packs=packs, loose=loose, bitmap=bitmap, commit_graph=graph)


def needs_maintenance(current: Stats, limits: Thresholds) -> bool:
    """True when the repository has more packs or loose objects than the thresholds allow."""
    if limits.packs and current.packs > limits.packs:
        return True
    return bool(limits.loose and current.loose > limits.loose)


def maintain(repo_path: Path, timeout: float) -> Stats:
    """Repack and write the commit-graph of ``repo_path`` under its maintenance lock; each
    command gets ``timeout`` seconds. Returns the stats afterwards."""
    lock_path = repo_path / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"maintenance of {repo_path.name} is already running") from None
        _run(repo_path, REPACK, timeout)
        _run(repo_path, COMMIT_GRAPH, timeout)
        return stats(repo_path)
    finally:
        os.close(fd)  # releases the flock


def _run(repo_path: Path, args: tuple[str, ...], timeout: float) -> None:
    """Run one git command on the repository with the protection settings; raise
    :class:`MaintenanceError` naming the command on failure or timeout."""
    argv = [GIT]
    for key, value in {**PROTECTED_CONFIG, **COMPAT_CONFIG}.items():
        argv += ["-c", f"{key}={value}"]
    argv += ["--git-dir", str(repo_path), *args]
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=git_env(), start_new_session=True,
                             preexec_fn=children.die_with_parent_hook())  # noqa: PLW1509
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        children.stop_group(child.pid, children.popen_wait(child), grace=5.0)
        child.communicate()
        raise MaintenanceError(f"git {args[0]} timed out after {timeout:.0f} s") from None
    if child.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit status {child.returncode}"
        raise MaintenanceError(f"git {args[0]} failed: {detail}")
