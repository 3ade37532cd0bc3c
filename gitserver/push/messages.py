"""The hook's wire protocol: the typed messages between git's hooks and the process that
started git, over the socket it passed in ``GITSERVER_HOOK_FD``.

One JSON object a line each way, one request, one reply. Every end speaks through this
module: the proc-receive hook (gitserver.push.hookrun.SocketLedger) and the daemon's or Repour's
:class:`gitserver.push.ledger.HookService` encode and decode here, the database fallback
(gitserver.push.hookdb) hands the same typed requests to that service without any wire, and the
bash pre-receive hook (gitserver/hooks/pre-receive) writes and matches the exact bytes named
below, which tests/unit/test_messages.py checks against the script.

==========================================================  ================================
request                                                     reply
==========================================================  ================================
``{"op": "intent", "updates": [[old, new, ref]], ...}``     ``{"push_id": n, "refused": {ref: why}}``
``{"op": "log", "push_id": n, "refs": [ref]}``              ``{"base": tip, "entries": [[ref, commit]]}``
``{"op": "done", "push_id": n, "moved": [ref], ...}``       ``{"messages": [text]}``
``{"op": "pre-receive", "quarantine": Q, "updates": ...}``  ``{"ok": true}`` or
``{"op": "limits", "quarantine": Q}`` (older hooks)         ``{"refused": "line\\nline"}``
==========================================================  ================================

Any request may be answered ``{"error": text}``, a message safe to show the pusher. A message
that is not one of these, or has a field of the wrong shape, raises :class:`ProtocolError`
(never a KeyError or TypeError).

Standard library and the pure git rules only, and NamedTuples rather than dataclasses: the
hooks import this on every push, and ``dataclasses`` costs ~15 ms of CPU to import
(docs/performance.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from gitserver.git import refs
from gitserver.push import limits

if TYPE_CHECKING:
    from gitserver.git.protect import RefCommand

OP = "op"
OP_INTENT = "intent"
OP_DONE = "done"
OP_LOG = "log"
OP_PRE_RECEIVE = "pre-receive"
OP_LIMITS = "limits"

# The bytes the bash pre-receive hook writes and reads (its printf format and its `case`
# patterns), so that the spacing of these JSON lines is fixed here, not by json's defaults.
SEPARATORS = (", ", ": ")
PRE_RECEIVE_PRINTF = '{"op": "pre-receive", "quarantine": "%s", "updates": [%s]}\\n'
ADMITTED_LINE = '{"ok": true}'
REFUSED_PREFIX = '{"refused": "'
REFUSED_SUFFIX = '"}'

Update = tuple[str, str, str]  # (old, new, ref), as git gives them to its hooks


class ProtocolError(ValueError):
    """A hook message that is not one of this protocol's; the text is safe to show."""


# --- requests --------------------------------------------------------------------------------

class Intent(NamedTuple):
    """proc-receive, before any ref moves: who pushes what, with its push options."""

    updates: tuple[Update, ...]
    push_options: tuple[str, ...] = ()


def intent_for(commands: Iterable[RefCommand], options: Iterable[str]) -> Intent:
    """The ``Intent`` of the allowed ``commands`` of a push, with its push options."""
    return Intent(tuple((c.old, c.new, c.ref) for c in commands), tuple(options))


class Log(NamedTuple):
    """proc-receive, holding the reference log's lock, before these refs of the push move:
    their entries, signed and chained on the log's tip (gitserver.push.refmove)."""

    push_id: int
    refs: tuple[str, ...]


class Done(NamedTuple):
    """proc-receive, after the refs moved: the push, the refs that did move, and the log
    commits that moved with them, (ref, commit) (None: a hook of an older release, which moved
    the refs without their entries)."""

    push_id: int
    moved: tuple[str, ...]
    logged: tuple[tuple[str, str], ...] | None = None


class PreReceive(NamedTuple):
    """pre-receive, while the objects are in quarantine ``quarantine`` (its directory name):
    the whole-push refusals, then the limits."""

    quarantine: str
    updates: tuple[Update, ...]


class Limits(NamedTuple):
    """The limits alone (the pre-receive hook of an older release)."""

    quarantine: str


Request = Intent | Log | Done | PreReceive | Limits


# --- replies ---------------------------------------------------------------------------------

class IntentReply(NamedTuple):
    """The recorded push, and the refs the repository's rules refused (ref → the reason, as
    git shows it): those were not recorded and must not move (docs/ref-rules.md). A push
    whose every ref was refused has ``push_id`` 0 (nothing recorded)."""

    push_id: int
    refused: tuple[tuple[str, str], ...] = ()


class LogReply(NamedTuple):
    """The entries of a :class:`Log`, chained on the log's tip ``base`` ("": the log is empty)
    in this order: the log's ref moves from ``base`` through them. A ref that is not here needs
    no entry (the log has its new value already)."""

    base: str
    entries: tuple[tuple[str, str], ...] = ()


class DoneReply(NamedTuple):
    messages: tuple[str, ...] = ()  # for the pusher's terminal (the pipeline's URL)


class Admitted(NamedTuple):
    """The push may go on to proc-receive."""


class Refused(NamedTuple):
    """The whole push is refused; one line each, as the pusher reads them."""

    lines: tuple[str, ...]


class Failed(NamedTuple):
    """The request could not be answered; the text is safe to show the pusher."""

    error: str


Reply = IntentReply | LogReply | DoneReply | Admitted | Refused | Failed


# --- on the wire -----------------------------------------------------------------------------

def encode(message: Request | Reply) -> bytes:
    """One message as its line on the socket."""
    return dumps(to_wire(message))


def dumps(wire: dict[str, object]) -> bytes:
    return json.dumps(wire, separators=SEPARATORS).encode() + b"\n"


def loads(line: bytes) -> object:
    """The JSON object of one line; ValueError when it is not JSON."""
    return json.loads(line)


def to_wire(message: Request | Reply) -> dict[str, object]:
    """The JSON object of ``message``."""
    if isinstance(message, Intent):
        wire: dict[str, object] = {OP: OP_INTENT, "updates": [list(u) for u in message.updates]}
        if message.push_options:
            wire["push_options"] = list(message.push_options)
        return wire
    if isinstance(message, Log):
        return {OP: OP_LOG, "push_id": message.push_id, "refs": list(message.refs)}
    if isinstance(message, Done):
        wire = {OP: OP_DONE, "push_id": message.push_id, "moved": list(message.moved)}
        if message.logged is not None:
            wire["logged"] = [list(pair) for pair in message.logged]
        return wire
    if isinstance(message, PreReceive):
        return {OP: OP_PRE_RECEIVE, "quarantine": message.quarantine,
                "updates": [list(u) for u in message.updates]}
    if isinstance(message, Limits):
        return {OP: OP_LIMITS, "quarantine": message.quarantine}
    if isinstance(message, IntentReply):
        wire = {"push_id": message.push_id}
        if message.refused:
            wire["refused"] = dict(message.refused)
        return wire
    if isinstance(message, LogReply):
        return {"base": message.base, "entries": [list(pair) for pair in message.entries]}
    if isinstance(message, DoneReply):
        return {"messages": list(message.messages)}
    if isinstance(message, Admitted):
        return {"ok": True}
    if isinstance(message, Refused):
        return {"refused": "\n".join(message.lines)}
    return {"error": message.error}


def decode_request(wire: object) -> Request:
    """The request a JSON object (``json.loads`` of one line) carries; ProtocolError if none."""
    op = wire.get(OP) if isinstance(wire, dict) else None
    decode = _REQUESTS.get(op) if isinstance(op, str) else None
    if decode is None:
        raise ProtocolError("unknown hook request")
    return decode(wire)  # type: ignore[arg-type]  # a dict: op was read from it


def decode_reply(wire: object, expected: type[Reply]) -> Reply:
    """The reply to a request answered by ``expected`` (or :class:`Failed`); ProtocolError
    when ``wire`` is neither."""
    if not isinstance(wire, dict):
        raise ProtocolError("malformed reply from gitserver")
    if "error" in wire:
        return Failed(str(wire["error"]))
    if expected is IntentReply and _is_int(wire.get("push_id")) and _refusals(wire.get("refused", {})) is not None:
        return IntentReply(wire["push_id"], _refusals(wire.get("refused", {})) or ())
    if expected is LogReply and _log_tip(wire.get("base")) and _logged(wire.get("entries")) is not None:
        return LogReply(wire["base"], _logged(wire.get("entries")) or ())
    if expected is DoneReply and _strings(wire.get("messages", [])) is not None:
        return DoneReply(tuple(wire.get("messages", [])))
    if expected in (Admitted, Refused) and wire.get("ok") is True:
        return Admitted()
    if expected in (Admitted, Refused) and isinstance(wire.get("refused"), str):
        return Refused(tuple(wire["refused"].split("\n")))
    raise ProtocolError("malformed reply from gitserver")


def _intent(wire: dict[str, object]) -> Intent:
    options = _strings(wire.get("push_options", []))
    if options is None:
        raise ProtocolError("malformed push options in hook message")
    return Intent(parse_updates(wire.get("updates")), options)


def _push_id(wire: dict[str, object]) -> int:
    push_id = wire.get("push_id")
    if not _is_int(push_id):
        raise ProtocolError("a request for a push this session did not start")
    return push_id  # type: ignore[return-value]  # _is_int


def _log(wire: dict[str, object]) -> Log:
    names = _strings(wire.get("refs"))
    if not names or any(refs.ref_format_problem(name) for name in names):
        raise ProtocolError("malformed list of refs to log")
    return Log(_push_id(wire), names)


def _done(wire: dict[str, object]) -> Done:
    moved = _strings(wire.get("moved"))
    if moved is None:
        raise ProtocolError("malformed list of moved refs")
    logged = _logged(wire["logged"]) if "logged" in wire else None
    if "logged" in wire and logged is None:
        raise ProtocolError("malformed list of log entries")
    return Done(_push_id(wire), moved, logged)


def _pre_receive(wire: dict[str, object]) -> PreReceive:
    updates = parse_updates(wire.get("updates"))
    return PreReceive(_quarantine(wire), updates)


def _limits(wire: dict[str, object]) -> Limits:
    return Limits(_quarantine(wire))


_REQUESTS: dict[str, Callable[[dict[str, object]], Request]] = {
    OP_INTENT: _intent, OP_LOG: _log, OP_DONE: _done, OP_PRE_RECEIVE: _pre_receive, OP_LIMITS: _limits}


def parse_updates(rows: object) -> tuple[Update, ...]:
    """``[[old, new, ref], ...]``: at least one, each two object ids and a well-formed ref."""
    if not isinstance(rows, list) or not rows:
        raise ProtocolError("malformed ref updates in hook message")
    updates = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise ProtocolError("malformed ref update in hook message")
        if not (refs.is_oid(row[0]) and refs.is_oid(row[1])) or refs.ref_format_problem(row[2]):
            raise ProtocolError("malformed ref update in hook message")
        updates.append((row[0], row[1], row[2]))
    return tuple(updates)


def _quarantine(wire: dict[str, object]) -> str:
    name = wire.get("quarantine")
    if not limits.is_quarantine_name(name):
        raise ProtocolError("malformed quarantine name in hook message")
    return name


def _strings(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _refusals(value: object) -> tuple[tuple[str, str], ...] | None:
    """``{ref: reason}`` as pairs, or None when it is not that."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return tuple(value.items())
    return None


def _logged(value: object) -> tuple[tuple[str, str], ...] | None:
    """``[[ref, log commit], ...]`` as pairs, or None when it is not that."""
    if not isinstance(value, list):
        return None
    pairs = []
    for row in value:
        if not (isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row)
                and not refs.ref_format_problem(row[0]) and refs.is_oid(row[1])):
            return None
        pairs.append((row[0], row[1]))
    return tuple(pairs)


def _log_tip(value: object) -> bool:
    return value == "" or (isinstance(value, str) and refs.is_oid(value))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
