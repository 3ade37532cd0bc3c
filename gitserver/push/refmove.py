"""Moving a push's refs together with their entries in the reference log (docs/provenance.md).

Each ref a push moves and the log commit that records the move go into one ``git update-ref
--stdin`` transaction (gitserver.provenance.logmove, which the server's own ref writes use
too): when the log cannot be written (its lock is taken or cannot be created, its value changed
under us), the ref does not move either, and the pusher reads why.

The hook holds the log's lock (gitserver.provenance.loglock) from asking for the signed entries
(:class:`gitserver.push.messages.Log`, answered by whoever started git, which holds the key)
until its transactions are done, so the entries chain on the tip they were signed for. An
atomic push is one transaction; any other push is one per ref, each ref with its own entry, and
after a ref that could not move the rest are signed again onto the tip as it is.

Standard library and the pure git rules only: the hook imports this on every push.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from gitserver.git import protect
from gitserver.provenance import loglock, logmove
from gitserver.push import hookenv, messages

REFLOG_MESSAGE = "push"
# What the pusher reads for a ref whose move failed, by cause.
LOST_RACE = "the ref changed during the push (another push won); fetch and retry"
ATOMIC_FAILED = "failed to lock or update the ref; retry the push"


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
        return Moved(dict.fromkeys((c.ref for c in commands), logmove.LOG_FAILED.format(why=exc)), ())
    error = run(logmove.script(commands, reply.base, reply.entries[-1][1] if reply.entries else None))
    if error is None:
        return Moved(dict.fromkeys(c.ref for c in commands), reply.entries)
    why = logmove.log_failure(error) or ATOMIC_FAILED
    return Moved(dict.fromkeys((c.ref for c in commands), why), ())


def _move_each(commands: list[protect.RefCommand], push_id: int, ledger: LogLedger, run: Transaction) -> Moved:
    failures: dict[str, str | None] = {}
    logged: list[tuple[str, str]] = []
    pending = list(commands)
    while pending:
        try:
            reply = ledger.log(push_id, [c.ref for c in pending])
        except hookenv.LedgerError as exc:
            failures.update(dict.fromkeys((c.ref for c in pending), logmove.LOG_FAILED.format(why=exc)))
            break
        entries, tip = dict(reply.entries), reply.base
        for n, cmd in enumerate(pending):
            commit = entries.get(cmd.ref)
            error = run(logmove.script([cmd], tip, commit))
            if error is None:
                failures[cmd.ref] = None
                if commit is not None:
                    logged.append((cmd.ref, commit))
                    tip = commit
                continue
            why = logmove.log_failure(error)
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


def git_transaction(stdin: str) -> str | None:
    """Run the ``update-ref --stdin`` script in the hook's repository (gitserver.provenance.logmove)."""
    return logmove.git_transaction(stdin, REFLOG_MESSAGE)
