"""The hook's wire protocol (gitserver.push.messages): every message round-trips, malformed
ones raise ProtocolError, and the bytes the bash pre-receive hook writes and matches are the
ones this module defines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gitserver.push import messages as m

A, B = "a" * 40, "b" * 40
HOOK = Path(__file__).resolve().parents[2] / "gitserver" / "hooks" / "pre-receive"


@pytest.mark.parametrize("message", [
    m.Intent(((A, B, "refs/heads/main"),)),
    m.Intent(((A, B, "refs/heads/main"), (B, A, "refs/tags/v1")), ("ci.skip",)),
    m.Done(7, ("refs/heads/main",)),
    m.Done(7, ()),
    m.Done(7, ("refs/heads/main",), (("refs/heads/main", B),)),
    m.Done(7, (), ()),
    m.Log(7, ("refs/heads/main", "refs/tags/v1")),
    m.PreReceive("tmp_objdir-incoming-q1", ((A, B, "refs/heads/main"),)),
    m.Limits("tmp_objdir-incoming-q1"),
])
def test_every_request_round_trips(message: m.Request) -> None:
    assert m.decode_request(json.loads(m.encode(message))) == message


@pytest.mark.parametrize(("reply", "expected"), [
    (m.IntentReply(3), m.IntentReply),
    (m.IntentReply(3, (("refs/heads/main", "commit 1a2b3c4 is not signed by a registered key; rule 'x'"),)),
     m.IntentReply),
    (m.IntentReply(0, (("refs/heads/a", "why"), ("refs/tags/b", "why not"))), m.IntentReply),
    (m.DoneReply(("pipeline 1 queued: http://x/1",)), m.DoneReply),
    (m.DoneReply(), m.DoneReply),
    (m.LogReply(A, (("refs/heads/main", B),)), m.LogReply),
    (m.LogReply(""), m.LogReply),
    (m.Failed("the server's signing key is unusable"), m.LogReply),
    (m.Admitted(), m.Admitted),
    (m.Refused(("one", "two")), m.Refused),
    (m.Failed("database error (OperationalError)"), m.IntentReply),
])
def test_every_reply_round_trips(reply: m.Reply, expected: type[m.Reply]) -> None:
    assert m.decode_reply(json.loads(m.encode(reply)), expected) == reply


@pytest.mark.parametrize(("wire", "error"), [
    (None, "unknown hook request"),
    ([], "unknown hook request"),
    ({}, "unknown hook request"),
    ({"op": "post-receive"}, "unknown hook request"),
    ({"op": ["intent"]}, "unknown hook request"),
    ({"op": "intent"}, "malformed ref updates in hook message"),
    ({"op": "intent", "updates": [[A, B]]}, "malformed ref update in hook message"),
    ({"op": "intent", "updates": [[A, "xyz", "refs/heads/main"]]}, "malformed ref update in hook message"),
    ({"op": "intent", "updates": [[A, B, "refs/heads/a..b"]]}, "malformed ref update in hook message"),
    ({"op": "intent", "updates": [[A, B, "refs/heads/main"]], "push_options": "ci.skip"},
     "malformed push options in hook message"),
    ({"op": "done", "moved": []}, "a request for a push this session did not start"),
    ({"op": "done", "push_id": True, "moved": []}, "a request for a push this session did not start"),
    ({"op": "done", "push_id": 1, "moved": [], "logged": [["refs/heads/main", "xyz"]]},
     "malformed list of log entries"),
    ({"op": "log", "push_id": 1, "refs": []}, "malformed list of refs to log"),
    ({"op": "log", "push_id": 1, "refs": ["refs/heads/a..b"]}, "malformed list of refs to log"),
    ({"op": "log", "refs": ["refs/heads/main"]}, "a request for a push this session did not start"),
    ({"op": "done", "push_id": 1, "moved": [1]}, "malformed list of moved refs"),
    ({"op": "done", "push_id": 1}, "malformed list of moved refs"),
    ({"op": "limits", "quarantine": "../x"}, "malformed quarantine name in hook message"),
    ({"op": "limits"}, "malformed quarantine name in hook message"),
    ({"op": "pre-receive", "quarantine": "tmp_objdir-incoming-q1"}, "malformed ref updates in hook message"),
])
def test_a_malformed_request_is_a_protocol_error(wire: object, error: str) -> None:
    with pytest.raises(m.ProtocolError, match=f"^{error}$"):
        m.decode_request(wire)


@pytest.mark.parametrize(("wire", "expected"), [
    (None, m.IntentReply),
    ({"push_id": "3"}, m.IntentReply),
    ({"push_id": 3, "refused": ["refs/heads/main"]}, m.IntentReply),
    ({"push_id": 3, "refused": {"refs/heads/main": 1}}, m.IntentReply),
    ({"messages": "x"}, m.DoneReply),
    ({"ok": True}, m.IntentReply),
    ({"ok": 1}, m.Admitted),
    ({"refused": ["x"]}, m.Refused),
])
def test_a_malformed_reply_is_a_protocol_error(wire: object, expected: type[m.Reply]) -> None:
    with pytest.raises(m.ProtocolError, match="malformed reply from gitserver"):
        m.decode_reply(wire, expected)


# --- the bash pre-receive hook reads and writes these bytes ------------------------------------

def test_the_replies_bash_matches_are_the_ones_python_writes() -> None:
    assert m.encode(m.Admitted()) == (m.ADMITTED_LINE + "\n").encode()
    refused = m.encode(m.Refused(("refs/heads/main: no", 'say "why"'))).decode()
    assert refused.startswith(m.REFUSED_PREFIX) and refused.endswith(m.REFUSED_SUFFIX + "\n")
    assert refused[len(m.REFUSED_PREFIX):-len(m.REFUSED_SUFFIX) - 1] == 'refs/heads/main: no\\nsay \\"why\\"'


def test_the_bash_hook_spells_the_replies_as_defined() -> None:
    script = HOOK.read_text()
    assert f"'{m.ADMITTED_LINE}') exit 0 ;;" in script
    assert f"'{m.REFUSED_PREFIX}'*'{m.REFUSED_SUFFIX}')" in script
    assert f"message=${{reply#'{m.REFUSED_PREFIX}'}}" in script
    assert f"message=${{message%'{m.REFUSED_SUFFIX}'}}" in script
    assert f"printf '{m.PRE_RECEIVE_PRINTF}'" in script


def test_what_bash_writes_decodes_as_a_pre_receive() -> None:
    """The request as bash's printf renders it (with the update rows its loop builds)."""
    rows = f'["{A}", "{B}", "refs/heads/main"], ["{B}", "{A}", "refs/tags/v1"]'
    line = subprocess.run(["bash", "-c", f"printf '{m.PRE_RECEIVE_PRINTF}' \"$0\" \"$1\"",
                           "tmp_objdir-incoming-q1", rows], capture_output=True, check=True).stdout
    assert m.decode_request(m.loads(line)) == m.PreReceive(
        "tmp_objdir-incoming-q1", ((A, B, "refs/heads/main"), (B, A, "refs/tags/v1")))
    assert line == m.encode(m.PreReceive("tmp_objdir-incoming-q1", ((A, B, "refs/heads/main"),
                                                                    (B, A, "refs/tags/v1"))))
