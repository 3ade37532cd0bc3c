"""Low-level helpers for the child processes gitserver supervises (build steps, alignment
tools, Repour's git runs): dying with the parent. (Namespaces, network included, are the job
sandbox's: gitserver.sandbox.)

They are applied in the child between ``fork`` and ``exec`` (``subprocess.Popen``'s
``preexec_fn``). Everything that needs a lookup (libc, the parent's pid) is resolved in the
parent, so the child only makes a few libc calls: it may have switched users already and be
unable to import anything, and a child forked from a multi-threaded process must not take locks
another thread might have held at fork time.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from typing import Any

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
    build steps and alignment tools, have a PID namespace for that: gitserver.sandbox; Repour's
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
