"""Low-level helpers for the child processes gitserver supervises (git for SSH and smart
HTTP, build steps, alignment tools, Repour's git runs): dying with the parent, and stopping a
child's whole process group. (Namespaces, network included, are the job sandbox's:
gitserver.process.sandbox.)

The pre-exec hooks are applied in the child between ``fork`` and ``exec`` (``subprocess.Popen``'s
``preexec_fn``). Everything that needs a lookup (libc, the parent's pid) is resolved in the
parent, so the child only makes a few libc calls: it may have switched users already and be
unable to import anything, and a child forked from a multi-threaded process must not take locks
another thread might have held at fork time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

Wait = Callable[[float | None], bool]

PR_SET_PDEATHSIG = 1

PreExec = Callable[[], None]


def libc() -> Any:
    """The C library (Linux), or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent_hook() -> PreExec:
    """A ``preexec_fn`` step that makes the child get SIGKILL when its parent goes away.

    Why: a supervised child otherwise outlives a parent killed with SIGKILL (no ``finally``
    runs, nobody kills the process group) and keeps running until its own timeout, holding a
    workspace, a repository lock or CPU.

    Caveat (Linux semantics): the "parent" is the *thread* that forked the child, not the
    process. The signal fires when that thread exits. gitserver forks from long-lived threads
    only — worker job threads and gunicorn's request threads, which live as long as their
    process — so in practice it fires when the process dies. It also only covers the direct
    child: a child that forks and then exits leaves its own children behind (sandboxed jobs,
    build steps and alignment tools, have a PID namespace for that: gitserver.process.sandbox; Repour's
    git runs are killed by process group on timeout and cancel).

    Must be applied after any credential change in the child (a uid/gid change clears the
    setting); ``subprocess`` switches users before it calls ``preexec_fn``.
    """
    c = libc()
    parent = os.getpid()
    prctl = getattr(c, "prctl", None) if c is not None else None
    kill = int(signal.SIGKILL)

    def apply() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return apply


def chain(*hooks: PreExec) -> PreExec:
    """One ``preexec_fn`` running ``hooks`` in order."""

    def apply() -> None:
        for hook in hooks:
            hook()

    return apply


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts: EPERM means it is there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- stopping a process group ------------------------------------------------------------------
# Every supervised child is started with ``start_new_session=True``: it leads its own process
# group (pgid == its pid), so one signal reaches what it started too (git's pack-objects, a
# build step's compiler), and nothing else.

def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when no process of it is left (ESRCH)
    or none is ours to signal (EPERM)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def popen_wait(proc: subprocess.Popen[bytes]) -> Wait:
    """The :data:`Wait` of a child we started (and may reap): ``proc.wait`` with a timeout."""

    def wait(timeout: float | None) -> bool:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    return wait


def stop_group(pgid: int, wait: Wait, grace: float, *, kill_wait: float | None = None,
               sweep: bool = False) -> None:
    """Stop process group ``pgid``: SIGTERM, ``wait`` up to ``grace`` seconds, then SIGKILL
    and ``wait`` up to ``kill_wait`` (None: until it exits). A ``grace`` of 0 or less sends
    SIGKILL at once.

    ``wait(timeout)`` waits for the group's leader and says whether it has exited; then the
    group is left alone, unless ``sweep``: then the SIGKILL goes out all the same, for what the
    leader left running in its group (a build step's background processes). Stops at once when
    the group can no longer be signalled.
    """
    steps = [(signal.SIGKILL, kill_wait)] if grace <= 0 else [(signal.SIGTERM, grace),
                                                                (signal.SIGKILL, kill_wait)]
    for sig, timeout in steps:
        if not signal_group(pgid, sig):
            return
        if wait(timeout) and not sweep:
            return
