"""Moving a push's refs together with their entries in the reference log (docs/provenance.md).

Each ref a push moves and the log commit that records the move go into one ``git update-ref
--stdin`` transaction. git locks every ref of a transaction (``refs/gitserver/log`` too)
before it changes any, and moves none when one lock or one compare-and-swap fails: so when the
log cannot be written (its lock is taken or cannot be created, its value changed under us), the
ref does not move either, and the pusher reads why. The pushed refs come first and the log
last: git renames the locks into place in that order, so a writer killed between two renames
leaves a moved ref that the log lacks (the reconciler logs it from the ledger), never an entry
for a move that did not happen.

The hook holds the log's lock (gitserver.provenance.loglock) from asking for the signed entries
(:class:`gitserver.push.messages.Log`, answered by whoever started git, which holds the key)
until its transactions are done, so the entries chain on the tip they were signed for. An
atomic push is one transaction; any other push is one per ref, each ref with its own entry, and
after a ref that could not move the rest are signed again onto the tip as it is.

Standard library and the pure git rules only: the hook imports this on every push.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple, Protocol

from gitserver.git import protect, refs
from gitserver.provenance import loglock
from gitserver.push import hookenv, messages

LOG_REF = refs.SERVER_LOG_REF
REFLOG_MESSAGE = "push"
# What the pusher reads for a ref whose move failed, by cause.
LOST_RACE = "the ref changed during the push (another push won); fetch and retry"
ATOMIC_FAILED = "failed to lock or update the ref; retry the push"
LOG_FAILED = "gitserver could not write the reference log ({why}); nothing was changed"
MAX_REASON = 200


class Moved(NamedTuple):
    """What became of each ref (None: moved, else why not) and the log commits that moved with
    them, (ref, commit)."""

    failures: dict[str, str | None]
    logged: tuple[tuple[str, str], ...]


class LogLedger(Protocol):
    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        """The signed entries of these refs of the push, chained on the log's tip."""


# Runs one ``update-ref --stdin`` script: None when it was applied, else git's error line.
Transaction = Callable[[str], str | None]


def move(commands: list[protect.RefCommand], atomic: bool, push_id: int, ledger: LogLedger,
         git_dir: str, transaction: Transaction | None = None) -> Moved:
    """Move ``commands``' refs, each with its log entry, holding the log's lock."""
    run = transaction or git_transaction
    with loglock.locked(git_dir):
        if atomic:
            return _move_atomic(commands, push_id, ledger, run)
        return _move_each(commands, push_id, ledger, run)


def _move_atomic(commands: list[protect.RefCommand], push_id: int, ledger: LogLedger, run: Transaction) -> Moved:
    try:
        reply = ledger.log(push_id, [c.ref for c in commands])
    except hookenv.LedgerError as exc:
        return Moved(dict.fromkeys((c.ref for c in commands), LOG_FAILED.format(why=exc)), ())
    error = run(script(commands, reply.base, reply.entries[-1][1] if reply.entries else None))
    if error is None:
        return Moved(dict.fromkeys(c.ref for c in commands), reply.entries)
    why = log_failure(error) or ATOMIC_FAILED
    return Moved(dict.fromkeys((c.ref for c in commands), why), ())


def _move_each(commands: list[protect.RefCommand], push_id: int, ledger: LogLedger, run: Transaction) -> Moved:
    failures: dict[str, str | None] = {}
    logged: list[tuple[str, str]] = []
    pending = list(commands)
    while pending:
        try:
            reply = ledger.log(push_id, [c.ref for c in pending])
        except hookenv.LedgerError as exc:
            failures.update(dict.fromkeys((c.ref for c in pending), LOG_FAILED.format(why=exc)))
            break
        entries, tip = dict(reply.entries), reply.base
        for n, cmd in enumerate(pending):
            commit = entries.get(cmd.ref)
            error = run(script([cmd], tip, commit))
            if error is None:
                failures[cmd.ref] = None
                if commit is not None:
                    logged.append((cmd.ref, commit))
                    tip = commit
                continue
            why = log_failure(error)
            if why is not None:  # the log itself: no later ref could move either
                failures.update(dict.fromkeys((c.ref for c in pending[n:]), why))
                pending = []
            else:
                failures[cmd.ref] = LOST_RACE
                pending = pending[n + 1:]  # their entries chained on this one's: sign again
            break
        else:
            pending = []
    return Moved(failures, tuple(logged))


def script(commands: list[protect.RefCommand], log_tip: str, log_commit: str | None) -> str:
    """The transaction: the refs, compare-and-swap on their old values, then the log's ref
    (from ``log_tip``, "" for none yet, to ``log_commit``) when there is an entry."""
    lines = [f"update {c.ref} {c.new} {c.old}\n" for c in commands]
    if log_commit is not None:
        lines.append(f"update {LOG_REF} {log_commit} {log_tip or refs.ZERO_OID}\n")
    return "".join(lines)


def log_failure(error: str) -> str | None:
    """The pusher's line when git's ``error`` is about the log's ref, else None (the pushed
    ref's own compare-and-swap failed). The repository's path is left out of it."""
    if f"'{LOG_REF}'" not in error:
        return None
    import re  # only on this rare path: the hook does not pay for it on every push

    why = re.sub(r"'[^']*/(refs/[^']*)'", r"'\1'", error).removeprefix("fatal: ").removeprefix("error: ")
    return LOG_FAILED.format(why=why[:MAX_REASON])


def git_transaction(stdin: str) -> str | None:
    """Run the ``update-ref --stdin`` script; None when applied, else git's first error line."""
    status, errors = run_git(["update-ref", "-m", REFLOG_MESSAGE, "--stdin"], stdin.encode(),
                             capture_errors=True)
    if status == 0:
        return None
    lines = [line for line in errors.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[0] if lines else f"git update-ref exited with {status}"


def run_git(args: list[str], stdin: bytes = b"", capture_errors: bool = False) -> tuple[int, bytes]:
    """Run ``git ARGS`` with ``stdin`` as its input, its output dropped: its exit status, and
    with ``capture_errors`` what it wrote on stderr.

    os.posix_spawnp rather than subprocess: this runs inside every push, and importing
    subprocess (threading, selectors, signal) costs about 6 ms of CPU per push. The hook's
    socket back to the daemon is not inheritable, so git does not hold it open; SIGPIPE stays
    ignored in git as Python leaves it, which cannot matter with its output on /dev/null."""
    read_end, write_end = os.pipe()
    err_read, err_write = os.pipe() if capture_errors else (-1, -1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = os.posix_spawnp("git", ["git", *args], os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, err_write if capture_errors else devnull, 2)])
    finally:
        for fd in (read_end, devnull, err_write):
            if fd >= 0:
                os.close(fd)
    try:
        view = memoryview(stdin)
        while view:
            view = view[os.write(write_end, view):]
    except BrokenPipeError:
        pass  # git exited without reading it all; its status says how it went
    finally:
        os.close(write_end)
    errors = _read_all(err_read) if capture_errors else b""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), errors


def _read_all(fd: int) -> bytes:
    """Everything until end-of-file (git's few error lines), then close ``fd``."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
