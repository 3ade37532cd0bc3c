"""What the git hooks run (``gitserver hook <name>``).

Hooks run once per push, inside the pusher's wait, so this module imports only the standard
library and gitserver's pure git rules. The identity of the pusher arrives in environment
variables set by the process that started git (the SSH session or the server itself):

``GITSERVER_PERMISSION``  read | write | admin, computed when the session was authorised
``GITSERVER_HOOK_FD``     a socket back to that process, which records the push

pre-receive runs while the pushed objects are still in git's quarantine: it refuses the whole
push for what must leave nothing behind (:mod:`gitserver.push.admission`, then the limits).
The installed hook is a bash script that asks the daemon first; this is its fallback.

proc-receive speaks git's pkt-line protocol (githooks(5)): it gets every pushed ref, applies
:func:`gitserver.git.protect.check` to each, records the push's intent, updates the allowed
refs with a compare-and-swap ``git update-ref``, each in one transaction with its signed entry
in the reference log (gitserver.push.refmove), marks the push done (which queues its pipeline)
and answers ``ok <ref>`` or ``ng <ref> <reason>``, so each refused ref is reported
with its own reason, e.g. ``! [remote rejected] main (non-fast-forward pushes are not
allowed)``. There is no post-receive step: by the time git tells the client ``ok``, the push
is in the ledger (docs/ledger.md).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO, Protocol

from gitserver.git import head, protect, push_options, refs
from gitserver.provenance import logmove
from gitserver.push import admission, hookenv, limits, messages, refmove

WRITE_PERMISSIONS = ("write", "admin")
MAX_PKT = 65520
# How long the hook waits for the process that started git to answer one request before it
# records the push itself.
HOOK_REPLY_TIMEOUT = 120.0
MAX_HOOK_REPLY = 16 * 1024 * 1024
_FLUSH = b"0000"
PUSH_OPTIONS_CAPABILITY = b"push-options"


def can_write(environ: dict[str, str] | os._Environ[str]) -> bool:
    return hookenv.permission(environ) in WRITE_PERMISSIONS


def run_git(args: list[str], stdin: bytes = b"") -> int:
    """Run ``git ARGS`` with ``stdin`` as its input and its output dropped; its exit status
    (gitserver.provenance.logmove.run_git)."""
    return logmove.run_git(args, stdin)[0]


def git_is_ancestor(old: str, new: str) -> bool:
    """True when ``old`` is an ancestor of (or equal to) ``new``."""
    return run_git(["merge-base", "--is-ancestor", old, new]) == 0


def check_all(commands: Iterable[protect.RefCommand], write: bool,
              is_ancestor: Callable[[str, str], bool] = git_is_ancestor) -> list[protect.Refusal | None]:
    return [protect.check(cmd, can_write=write, is_ancestor=is_ancestor) for cmd in commands]


# --- pre-receive -----------------------------------------------------------------------------

def pre_receive(stdin: Iterable[str], stderr: BinaryIO, environ: dict[str, str] | os._Environ[str]) -> int:
    """What must be refused for the whole push while its objects are still in quarantine
    (here, and only here, a refusal leaves nothing behind): a pusher who may not write, the
    server's reserved names (:func:`gitserver.push.admission.declined`), then the size limits.
    When proc-receive is not in charge, also every per-ref rule, all or nothing."""
    commands = [protect.RefCommand.parse(line) for line in stdin if line.strip()]
    if proc_receive_in_charge(environ):
        # No quarantine: the push brought no objects (only deletions), nothing to keep out;
        # proc-receive refuses those ref by ref.
        refused = admission.declined(commands, can_write(environ)) if environ.get(limits.ENV_QUARANTINE) else []
    else:
        refused = [f"{refs.short_name(r.ref)}: {r.message}"
                   for r in decide(commands, can_write(environ)) if r is not None]
    for line in refused:
        _say(stderr, f"error: {line}")
    if refused:
        return 1
    over = limits.check_push(environ)
    if over is not None:
        _say(stderr, f"error: {over}")
        return 1
    return 0


def proc_receive_in_charge(environ: dict[str, str] | os._Environ[str]) -> bool:
    """True when the server started receive-pack with receive.procReceiveRefs (git passes
    ``-c`` settings to hooks in GIT_CONFIG_PARAMETERS)."""
    return "receive.procreceiverefs" in environ.get("GIT_CONFIG_PARAMETERS", "").lower()


# --- proc-receive ----------------------------------------------------------------------------

def read_pkt(stream: BinaryIO) -> bytes | None:
    """One pkt-line payload, or None for a flush packet."""
    header = _read_exact(stream, 4)
    # The length is four hex digits; int(x, 16) alone would also take "+0x1" or " 1 ".
    if not all(c in b"0123456789abcdef" for c in header.lower()):
        raise ValueError(f"bad pkt-line header {header!r}")
    length = int(header, 16)
    if length == 0:
        return None
    if length < 4 or length > MAX_PKT:
        raise ValueError(f"bad pkt-line length {length}")
    return _read_exact(stream, length - 4)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """``n`` bytes: a buffered stream's read returns fewer only at end-of-file."""
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("unexpected end of pkt-line stream")
    return data


def pkt(payload: str) -> bytes:
    data = payload.encode()
    return b"%04x" % (len(data) + 4) + data


def proc_receive(stdin: BinaryIO, stdout: BinaryIO, environ: dict[str, str] | os._Environ[str],
                 is_ancestor: Callable[[str, str], bool] = git_is_ancestor,
                 transaction: refmove.Transaction | None = None,
                 ledger: Ledger | None = None, stderr: BinaryIO | None = None) -> int:
    """Decide, record and apply one push (githooks(5) proc-receive protocol).

    The order is the ledger's guarantee: the intent (who pushes which ref from what to what)
    is recorded before any ref moves, the refs move each with its entry in the reference log
    (a ref whose entry cannot be written does not move), and the push is marked done with its
    pipeline queued before git hears ``ok``. A crash between two steps leaves a pending intent
    that the reconciler settles; a push that cannot be recorded moves nothing.
    ``transaction``: what runs one ``update-ref --stdin`` script (tests).
    """
    ledger = ledger or ledger_from_environment(environ)
    version = read_pkt(stdin)
    if version is None or not version.startswith(b"version=1"):
        raise ValueError("proc-receive: unsupported protocol version")
    capabilities = version.partition(b"\0")[2].split()
    while read_pkt(stdin) is not None:
        pass
    # Asking for push options makes git send them after the commands (git >= 2.29).
    with_options = PUSH_OPTIONS_CAPABILITY in capabilities
    stdout.write(pkt("version=1\0push-options\n" if with_options else "version=1\n") + _FLUSH)
    stdout.flush()
    commands = []
    while (line := read_pkt(stdin)) is not None:
        commands.append(protect.RefCommand.parse(line.decode("utf-8", "replace")))
    options = []
    while with_options and (line := read_pkt(stdin)) is not None:
        options.append(line.decode("utf-8", "replace").rstrip("\n"))
    atomic = b"atomic" in capabilities
    verdicts = decide(commands, can_write(environ), is_ancestor)
    try:
        push_options.parse(options)
    except push_options.PushOptionError as exc:  # refuse every ref, naming the option
        verdicts = [protect.Refusal(cmd.ref, "push_option", str(exc)) for cmd in commands]
    allowed = [cmd for cmd, refusal in zip(commands, verdicts, strict=True) if refusal is None]
    if atomic and len(allowed) != len(commands):
        allowed = []
    failures: dict[str, str | None] = {}
    messages: list[str] = []
    if allowed:
        try:
            reply = ledger.intent(allowed, options)
        except hookenv.LedgerError as exc:
            verdicts = [r or protect.Refusal(c.ref, "unrecorded") for c, r in zip(commands, verdicts, strict=True)]
            messages.append(f"error: gitserver could not record this push: {exc}")
            allowed = []
        else:
            push_id, by_rules = reply.push_id, dict(reply.refused)
            # The repository's rules (docs/ref-rules.md) refused these; they were not recorded.
            verdicts = [r or (protect.Refusal(c.ref, "ref_rule", by_rules[c.ref]) if c.ref in by_rules else None)
                        for c, r in zip(commands, verdicts, strict=True)]
            allowed = [c for c in allowed if c.ref not in by_rules]
            if atomic and by_rules:
                allowed = []
            result = refmove.move(allowed, atomic, push_id, ledger, environ.get("GIT_DIR") or ".",
                                  transaction) if allowed else refmove.Moved({}, ())
            failures = result.failures
            moved = [c.ref for c in allowed if failures[c.ref] is None]
            if not head_is_born(moved, environ.get("GIT_DIR")):
                head.adopt_pushed_branch(moved, environ.get("GIT_DIR"))
            try:
                messages += ledger.done(push_id, moved, result.logged) if push_id else []
            except hookenv.LedgerError as exc:
                # The intent is recorded and the refs moved: the reconciler finishes the record.
                messages.append(f"warning: gitserver will record this push shortly ({exc})")
    for cmd, refusal in zip(commands, verdicts, strict=True):
        if refusal is not None:
            stdout.write(pkt(f"ng {cmd.ref} {refusal.message}\n"))
        elif cmd.ref not in failures:
            stdout.write(pkt(f"ng {cmd.ref} atomic push failed: another ref was refused\n"))
        elif failures[cmd.ref] is not None:
            stdout.write(pkt(f"ng {cmd.ref} {failures[cmd.ref]}\n"))
        else:
            stdout.write(pkt(f"ok {cmd.ref}\n"))
    stdout.write(_FLUSH)
    stdout.flush()
    for message in messages:
        _say(stderr or sys.stderr.buffer, message)
    return 0


def head_is_born(moved: list[str], git_dir: str | None) -> bool:
    """True when HEAD surely names a branch that exists, read from the files alone: the branch
    was just moved, or its loose ref file is there (git refuses to point a branch at anything
    but a commit). Then there is nothing to adopt, and the push is spared
    :func:`gitserver.git.head.adopt_pushed_branch`'s import of subprocess and its two git
    commands (~10 ms of CPU). Anything else (packed refs, reftable, a detached HEAD) is left
    to it."""
    if not git_dir:
        return False
    try:
        with open(os.path.join(git_dir, head.HEAD), encoding="utf-8", errors="replace") as file:
            text = file.read(4096).strip()
    except OSError:
        return False
    branch = text.removeprefix(head.SYMREF_PREFIX)
    if not text.startswith(head.SYMREF_PREFIX) or not branch.startswith(refs.HEADS) or ".." in branch:
        return False
    return branch in moved or os.path.isfile(os.path.join(git_dir, branch))


def decide(commands: list[protect.RefCommand], write: bool,
           is_ancestor: Callable[[str, str], bool] = git_is_ancestor) -> list[protect.Refusal | None]:
    """Each command's refusal or None; a push that names a ref twice is refused whole."""
    twice = protect.duplicated(commands)
    if twice:
        return [protect.Refusal(cmd.ref, "duplicate") for cmd in commands]
    return check_all(commands, write, is_ancestor)


# --- the ledger, as the hook reaches it --------------------------------------------------------

class Ledger(Protocol):
    def intent(self, commands: list[protect.RefCommand], options: list[str]) -> messages.IntentReply:
        """Judge by the repository's rules and record who pushes what (with its push options)
        before any ref moves: the push's id and the refs the rules refused."""

    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        """Holding the reference log's lock: the signed entries of these refs of the push,
        chained on the log's tip (gitserver.push.refmove)."""

    def done(self, push_id: int, moved: list[str], logged: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """Mark the push done with the refs that moved and the log commits that moved with
        them; messages for the pusher."""


class SocketLedger:
    """Asks the process that started git (the SSH daemon, Repour's internal push) over the
    socket it passed in ``GITSERVER_HOOK_FD``: one JSON line each way per request. When that
    process is gone (killed while git went on), the hook records straight into the database
    instead, so git outliving the daemon still leaves a record.

    Plain reads and writes on the descriptor, with select for the timeout: the ``socket``
    module (and the selectors and enums it imports) costs about 3 ms of CPU per push."""

    def __init__(self, fd: int, environ: dict[str, str] | os._Environ[str]) -> None:
        self.environ = environ
        os.set_inheritable(fd, False)  # the git commands the hook runs must not hold it
        self.fd: int | None = fd
        self.buffer = b""
        self.direct: Ledger | None = None

    def _ask(self, request: messages.Request, expected: type[messages.Reply]) -> messages.Reply | None:
        """The reply, or None when the other side is gone (then use the database directly)."""
        if self.fd is None:
            return None
        try:
            deadline = time.monotonic() + HOOK_REPLY_TIMEOUT
            self._send(messages.encode(request), deadline)
            wire = messages.loads(self._readline(deadline))
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
            return None
        try:
            reply = messages.decode_reply(wire, expected)
        except messages.ProtocolError as exc:
            raise hookenv.LedgerError(str(exc)) from exc
        if isinstance(reply, messages.Failed):
            raise hookenv.LedgerError(reply.error)
        return reply

    def _wait(self, deadline: float, write: bool = False) -> None:
        assert self.fd is not None
        remaining = deadline - time.monotonic()
        ready = select.select([], [self.fd], [], max(remaining, 0)) if write else \
            select.select([self.fd], [], [], max(remaining, 0))
        if remaining <= 0 or not (ready[1] if write else ready[0]):
            raise TimeoutError("no reply from gitserver")

    def _send(self, data: bytes, deadline: float) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            self._wait(deadline, write=True)
            view = view[os.write(self.fd, view):]

    def _readline(self, deadline: float) -> bytes:
        assert self.fd is not None
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_HOOK_REPLY:
                raise ConnectionError("reply from gitserver too long")
            self._wait(deadline)
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise ConnectionError("no reply from gitserver")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def _fallback(self) -> Ledger:
        if self.direct is None:
            self.direct = _direct_ledger(self.environ)
        return self.direct

    def intent(self, commands: list[protect.RefCommand], options: list[str]) -> messages.IntentReply:
        reply = self._ask(messages.intent_for(commands, options), messages.IntentReply)
        if reply is None:
            return self._fallback().intent(commands, options)
        assert isinstance(reply, messages.IntentReply)  # decode_reply answers what is expected
        return reply

    def log(self, push_id: int, ref_names: list[str]) -> messages.LogReply:
        reply = self._ask(messages.Log(push_id, tuple(ref_names)), messages.LogReply)
        if reply is None:
            return self._fallback().log(push_id, ref_names)
        assert isinstance(reply, messages.LogReply)
        return reply

    def done(self, push_id: int, moved: list[str], logged: tuple[tuple[str, str], ...] = ()) -> list[str]:
        reply = self._ask(messages.Done(push_id, tuple(moved), logged), messages.DoneReply)
        if reply is None:
            return self._fallback().done(push_id, moved, logged)
        assert isinstance(reply, messages.DoneReply)
        return list(reply.messages)


def ledger_from_environment(environ: dict[str, str] | os._Environ[str]) -> Ledger:
    """The socket back to the process that started git, or the database itself."""
    fd = environ.get(hookenv.ENV_HOOK_FD)
    if fd and fd.isdigit():
        return SocketLedger(int(fd), environ)
    return _direct_ledger(environ)


def _direct_ledger(environ: dict[str, str] | os._Environ[str]) -> Ledger:
    """The database ledger. The hooks start python with -S (hooks/proc-receive), which leaves
    out the installed packages' site setup; SQLAlchemy and the database drivers need it, so
    it runs here, on this rare path, and not on every push."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()
    from gitserver.push.hookdb import DirectLedger

    return DirectLedger(environ)


def _say(stream: BinaryIO, text: str) -> None:
    stream.write(text.encode("utf-8", "replace") + b"\n")
    stream.flush()


def main(name: str) -> int:
    """Entry point of ``gitserver hook <name>``."""
    environ = os.environ
    if name == "pre-receive":
        return pre_receive(sys.stdin, sys.stderr.buffer, environ)
    if name == "proc-receive":
        return proc_receive(sys.stdin.buffer, sys.stdout.buffer, environ)
    if name == "post-receive":
        return 0  # hooks installed by an older release; proc-receive records pushes now
    _say(sys.stderr.buffer, f"error: unknown hook {name!r}")
    return 2
