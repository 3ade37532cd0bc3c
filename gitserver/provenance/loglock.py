"""The reference log's lock: every writer of ``refs/gitserver/log`` takes turns on it.

A ``flock`` on a file beside the refs (:data:`LOCK_FILE`), so the writers of every process of
this host take turns: the proc-receive hook while it moves a push's refs together with their
log entries (gitserver.push.refmove), the server while it creates its own refs with theirs
(gitserver.provenance.archive_tags), and every other writer through
gitserver.provenance.reflog. Standard library and the pure git rules only: the hook takes it
on every push.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator

from gitserver.git import refs

LOCK_FILE = "gitserver-log.lock"
# A live writer holds git's ref lock for milliseconds; one this old was left by a writer that
# died. Not younger: `git pack-refs` locks each ref it prunes for a moment, without our lock.
STALE_REF_LOCK_SECONDS = 10.0


@contextlib.contextmanager
def locked(git_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the log's lock of the repository at ``git_dir`` (waits for the other writers)."""
    fd = os.open(os.path.join(git_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        clear_stale_ref_lock(git_dir)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def clear_stale_ref_lock(git_dir: str | os.PathLike[str], ref: str = refs.SERVER_LOG_REF) -> bool:
    """Remove git's lock of ``ref`` (the log's, or one the server is about to create) when its
    writer died; whether one was removed.

    Called holding :func:`locked`, which every writer of the log ref, and of the refs it
    covers, holds while it writes: a ref lock found then, older than a live write lasts,
    belongs to nobody alive. git never removes it, and every later write of the log, so every
    push to the repository, would fail until the reconciler's pass (``quarantine_stale_seconds``)
    did. Only a regular file is removed."""
    path = os.path.join(git_dir, ref + ".lock")
    try:
        found = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(found.st_mode) or time.time() - found.st_mtime < STALE_REF_LOCK_SECONDS:
        return False
    with contextlib.suppress(OSError):
        os.unlink(path)
        return True
    return False
