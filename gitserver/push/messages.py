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
``{"op": "done", "push_id": n, "moved": [ref]}``            ``{"messages": [text]}``
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


class Done(NamedTuple):
    """proc-receive, after the refs moved: the push and the refs that did move."""

    push_id: int
    moved: tuple[str, ...]


class PreReceive(NamedTuple):
    """pre-receive, while the objects are in quarantine ``quarantine`` (its directory name):
    the whole-push refusals, then the limits."""

    quarantine: str
    updates: tuple[Update, ...]


class Limits(NamedTuple):
    """The limits alone (the pre-receive hook of an older release)."""

    quarantine: str


Request = Intent | Done | PreReceive | Limits


# --- replies ---------------------------------------------------------------------------------

class IntentReply(NamedTuple):
    """The recorded push, and the refs the repository's rules refused (ref → the reason, as
    git shows it): those were not recorded and must not move (docs/ref-rules.md). A push
    whose every ref was refused has ``push_id`` 0 (nothing recorded)."""

    push_id: int
    refused: tuple[tuple[str, str], ...] = ()


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


Reply = IntentReply | DoneReply | Admitted | Refused | Failed


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
    if isinstance(message, Done):
        return {OP: OP_DONE, "push_id": message.push_id, "moved": list(message.moved)}
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


def _done(wire: dict[str, object]) -> Done:
    push_id = wire.get("push_id")
    if not _is_int(push_id):
        raise ProtocolError("done for a push this session did not start")
    moved = _strings(wire.get("moved"))
    if moved is None:
        raise ProtocolError("malformed list of moved refs")
    return Done(push_id, moved)  # type: ignore[arg-type]


def _pre_receive(wire: dict[str, object]) -> PreReceive:
    updates = parse_updates(wire.get("updates"))
    return PreReceive(_quarantine(wire), updates)


def _limits(wire: dict[str, object]) -> Limits:
    return Limits(_quarantine(wire))


_REQUESTS: dict[str, Callable[[dict[str, object]], Request]] = {
    OP_INTENT: _intent, OP_DONE: _done, OP_PRE_RECEIVE: _pre_receive, OP_LIMITS: _limits}


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
