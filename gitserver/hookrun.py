"""What the git hooks run (``gitserver hook <name>``).

Hooks run once per push, inside the pusher's wait, so this module imports only the standard
library and gitserver's pure git rules. The identity of the pusher arrives in environment
variables set by the process that started git (the SSH session or the server itself):

``GITSERVER_PERMISSION``  read | write | admin, computed when the session was authorised
``GITSERVER_HOOK_FD``     a socket back to that process, which records the push (post-receive)

proc-receive speaks git's pkt-line protocol (githooks(5)): it gets every pushed ref, applies
:func:`gitserver.git.protect.check` to each, updates the allowed ones with a compare-and-swap
``git update-ref`` and answers ``ok <ref>`` or ``ng <ref> <reason>``, so each refused ref is
reported with its own reason, e.g. ``! [remote rejected] main (non-fast-forward pushes are
not allowed)``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import BinaryIO

from gitserver.git import protect, refs

ENV_PERMISSION = "GITSERVER_PERMISSION"
ENV_HOOK_FD = "GITSERVER_HOOK_FD"
WRITE_PERMISSIONS = ("write", "admin")
MAX_PKT = 65520
_FLUSH = b"0000"


def can_write(environ: dict[str, str] | os._Environ[str]) -> bool:
    return environ.get(ENV_PERMISSION, "") in WRITE_PERMISSIONS


def git_is_ancestor(old: str, new: str) -> bool:
    """True when ``old`` is an ancestor of (or equal to) ``new``."""
    result = subprocess.run(["git", "merge-base", "--is-ancestor", old, new],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return result.returncode == 0


def check_all(commands: Iterable[protect.RefCommand], write: bool,
              is_ancestor: Callable[[str, str], bool] = git_is_ancestor) -> list[protect.Refusal | None]:
    return [protect.check(cmd, can_write=write, is_ancestor=is_ancestor) for cmd in commands]


# --- pre-receive -----------------------------------------------------------------------------

def pre_receive(stdin: Iterable[str], stderr: BinaryIO, environ: dict[str, str] | os._Environ[str]) -> int:
    """All-or-nothing check, used only when proc-receive is not in charge."""
    commands = [protect.RefCommand.parse(line) for line in stdin if line.strip()]
    refusals = [r for r in check_all(commands, can_write(environ)) if r is not None]
    for refusal in refusals:
        _say(stderr, f"error: {refs.short_name(refusal.ref)}: {refusal.message}")
    return 1 if refusals else 0


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
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("unexpected end of pkt-line stream")
        data += chunk
    return data


def pkt(payload: str) -> bytes:
    data = payload.encode()
    return b"%04x" % (len(data) + 4) + data


def proc_receive(stdin: BinaryIO, stdout: BinaryIO, environ: dict[str, str] | os._Environ[str],
                 is_ancestor: Callable[[str, str], bool] = git_is_ancestor,
                 update_refs: Callable[[list[protect.RefCommand], bool], list[str | None]] | None = None) -> int:
    update_refs = update_refs or git_update_refs
    version = read_pkt(stdin)
    if version is None or not version.startswith(b"version=1"):
        raise ValueError("proc-receive: unsupported protocol version")
    capabilities = version.partition(b"\0")[2].split()
    while read_pkt(stdin) is not None:
        pass
    stdout.write(pkt("version=1\n") + _FLUSH)
    stdout.flush()
    commands = []
    while (line := read_pkt(stdin)) is not None:
        commands.append(protect.RefCommand.parse(line.decode("utf-8", "replace")))
    atomic = b"atomic" in capabilities
    verdicts = check_all(commands, can_write(environ), is_ancestor)
    allowed = [cmd for cmd, refusal in zip(commands, verdicts) if refusal is None]
    if atomic and len(allowed) != len(commands):
        allowed = []
    failures = dict(zip((c.ref for c in allowed), update_refs(allowed, atomic))) if allowed else {}
    for cmd, refusal in zip(commands, verdicts):
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
    return 0


def git_update_refs(commands: list[protect.RefCommand], atomic: bool) -> list[str | None]:
    """Apply the updates with compare-and-swap on the old value; None means done."""
    message = "push"
    if atomic:
        script = "".join(f"update {c.ref} {c.new} {c.old}\n" for c in commands)
        ok = _update_ref(["--stdin"], script)
        return [None if ok else "failed to lock or update the ref; retry the push"] * len(commands)
    return [None if _update_ref(["-m", message, c.ref, c.new, c.old]) else
            "the ref changed during the push (another push won); fetch and retry"
            for c in commands]


def _update_ref(args: list[str], stdin: str | None = None) -> bool:
    result = subprocess.run(["git", "update-ref", *args], input=stdin, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return result.returncode == 0


# --- post-receive ----------------------------------------------------------------------------

def post_receive(stdin: Iterable[str], stderr: BinaryIO, environ: dict[str, str] | os._Environ[str]) -> int:
    updates = [protect.RefCommand.parse(line) for line in stdin if line.strip()]
    if not updates:
        return 0
    payload = {"updates": [[u.old, u.new, u.ref] for u in updates]}
    fd = environ.get(ENV_HOOK_FD)
    try:
        if fd:
            reply = _ask_parent(int(fd), payload)
        else:
            from gitserver.hookdb import record_from_environment

            reply = record_from_environment(environ, payload)
    except Exception as exc:  # noqa: BLE001  (the push is done; say so and keep going)
        _say(stderr, f"warning: gitserver could not record this push: {exc}")
        return 0
    for message in reply.get("messages", []):
        _say(stderr, str(message))
    return 0


def _ask_parent(fd: int, payload: dict[str, object]) -> dict[str, object]:
    with socket.socket(fileno=fd) as sock:
        sock.sendall(json.dumps(payload).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data or b"{}")


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
        return post_receive(sys.stdin, sys.stderr.buffer, environ)
    _say(sys.stderr.buffer, f"error: unknown hook {name!r}")
    return 2
