"""``python -m bench.reaper ARGV…``: run ARGV under a child subreaper, so that the CPU time of
every process the server ever starts ends up counted in this process's tree.

Linux credits a process's CPU time to its parent's ``cutime``/``cstime`` only when the parent
waits for it. A server's grandchild whose parent exits first (git's ``pack-objects`` after an
``upload-pack`` that is gone, a shell's children under sshd) is re-parented to init, and its
CPU time leaves the tree unseen. With ``prctl(PR_SET_CHILD_SUBREAPER)`` such orphans are
re-parented to this launcher instead, which waits for every one of them; so the CPU of the
launcher's tree (live processes plus everything reaped into it, see
:func:`bench.servers.tree_cpu`) is the whole server's, however its processes come and go.

SIGTERM and SIGINT are passed on to the server's process group; the launcher exits with the
server's status once no child is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int, name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({name}): {os.strerror(err)}")


def become_subreaper() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def stop_with_parent(parent: int) -> None:
    """The bench starts each server in a session of its own, so a bench killed outright (the
    smoke test's timeout, kill -9) would leave its servers running: when the bench dies, this
    launcher gets SIGTERM and passes it on, as on any other stop."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, "PR_SET_PDEATHSIG")
    if os.getppid() != parent:  # the bench died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.reaper COMMAND [ARG…]", file=sys.stderr)
        return 2
    parent = os.getppid()
    become_subreaper()
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    stop_with_parent(parent)
    status = 1
    while True:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            return status
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(code)
            status = child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
