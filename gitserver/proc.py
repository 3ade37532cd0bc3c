"""Low-level helpers for the child processes gitserver supervises (build steps, alignment
tools, Repour's git runs): dying with the parent, and an isolated network namespace.

Both are applied in the child between ``fork`` and ``exec`` (``subprocess.Popen``'s
``preexec_fn``). Everything that needs a lookup (libc, the parent's pid) is resolved in the
parent, so the child only makes a few libc calls: it may have switched users already and be
unable to import anything, and a child forked from a multi-threaded process must not take locks
another thread might have held at fork time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
# struct ifreq (16-byte name, then a union whose first member here is the short flags).
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ_SIZE = 40
_AF_INET = 2
_SOCK_DGRAM = 2

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
    child: a child that forks and then exits leaves its own children behind (build steps add a
    PID namespace for that; alignment tools run in their own process group, killed on timeout
    and cancel).

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


class NetworkIsolationError(Exception):
    """A new network namespace cannot be set up here (the message says why)."""


def isolated_network_hook() -> PreExec:
    """A ``preexec_fn`` step that moves the child into a new network namespace with only the
    loopback interface, brought up.

    Needs CAP_SYS_ADMIN (the worker runs as root) and must run before the child drops its
    privileges. The new namespace has its own loopback: ``127.0.0.1`` inside is not the host's,
    so the server's own ports (API, SSH, PostgreSQL on loopback) are out of reach too, while
    a build's own local servers (test fixtures) still work. Raises :class:`OSError` in the child
    on failure, which ``subprocess`` reports to the parent as a ``SubprocessError``.
    """
    c = libc()
    if c is None or not hasattr(c, "unshare"):
        raise NetworkIsolationError("no libc unshare() on this platform")
    unshare, socket_fn, ioctl, close = c.unshare, c.socket, c.ioctl, c.close
    # Built here, not in the child: name "lo", flags filled in by SIOCGIFFLAGS.
    ifreq = ctypes.create_string_buffer(struct.pack("16s", b"lo").ljust(_IFREQ_SIZE, b"\0"),
                                        _IFREQ_SIZE)
    flags_at = ctypes.addressof(ifreq) + 16
    flags = ctypes.c_short.from_address(flags_at)

    def apply() -> None:
        if unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        fd = socket_fn(_AF_INET, _SOCK_DGRAM, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "socket() in the new network namespace failed")
        try:
            if ioctl(fd, _SIOCGIFFLAGS, ifreq) != 0:
                raise OSError(ctypes.get_errno(), "reading the flags of lo failed")
            flags.value = flags.value | _IFF_UP
            if ioctl(fd, _SIOCSIFFLAGS, ifreq) != 0:
                raise OSError(ctypes.get_errno(), "bringing lo up failed")
        finally:
            close(fd)

    return apply
