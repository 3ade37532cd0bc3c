"""Push options: the parser's table, and proc-receive asking git for them."""

from __future__ import annotations

import io
import re
import tempfile

import pytest

from gitserver.git import push_options
from gitserver.push.hookrun import pkt, proc_receive, read_pkt

Z, A = "0" * 40, "a" * 40
FLUSH = b"0000"


@pytest.mark.parametrize(("options", "skip", "variables"), [
    ([], False, ()),
    (["ci.skip"], True, ()),
    (["ci.variable=MODE=release", "ci.variable=EMPTY=", "ci.variable=X=a=b"], False,
     (("MODE", "release"), ("EMPTY", ""), ("X", "a=b"))),
    (["ci.variable=MODE=1", "ci.variable=MODE=2"], False, (("MODE", "2"),)),  # last one wins
    (["merge_request.create", "topic=x"], False, ()),  # others are stored, not acted on
])
def test_parse(options: list[str], skip: bool, variables: tuple[tuple[str, str], ...]) -> None:
    parsed = push_options.parse(options)
    assert (parsed.raw, parsed.skip_ci, parsed.variables) == (tuple(options), skip, variables)


@pytest.mark.parametrize(("options", "problem"), [
    (["ci.variable=NOVALUE"], "must be KEY=VALUE"),
    (["ci.variable=1BAD=x"], "must be KEY=VALUE"),
    (["ci.variable=GITSERVER_REF=x"], "GITSERVER_REF is reserved"),
    (["ci.skipp"], "'ci.skipp' is unknown"),
    (["x"] * 33, "33 options given, at most 32 are accepted"),
    (["o" * 5000], "longer than 4096 characters"),
])
def test_parse_refuses(options: list[str], problem: str) -> None:
    with pytest.raises(push_options.PushOptionError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        push_options.parse(options)


def _run(capabilities: str, options: list[str], *commands: str) -> tuple[list[str], list[object]]:
    from tests.unit.test_hookrun import FakeLedger

    data = pkt(f"version=1\0{capabilities}\n") + FLUSH
    data += b"".join(pkt(c + "\n") for c in commands) + FLUSH
    data += b"".join(pkt(o) for o in options) + FLUSH  # git sends them without newline
    out = io.BytesIO()
    events: list[tuple[str, object]] = []
    git_dir = tempfile.mkdtemp(prefix="push-options-")
    proc_receive(io.BytesIO(data), out, {"GITSERVER_PERMISSION": "write", "GIT_DIR": git_dir},
                 transaction=lambda script: None,
                 ledger=FakeLedger(events), stderr=io.BytesIO())  # type: ignore[arg-type]
    out.seek(0)
    assert read_pkt(out) == b"version=1\0push-options\n"  # asks git for the options
    assert read_pkt(out) is None
    lines = []
    while (payload := read_pkt(out)) is not None:
        lines.append(payload.decode().rstrip("\n"))
    return lines, [event for event in events if event[0] == "options"]


def test_proc_receive_reads_the_options_and_records_them_with_the_intent() -> None:
    lines, recorded = _run("push-options", ["ci.skip", "ci.variable=A=1"], f"{Z} {A} refs/heads/x")
    assert lines == ["ok refs/heads/x"]
    assert recorded == [("options", ["ci.skip", "ci.variable=A=1"])]


def test_a_bad_ci_option_refuses_every_ref_naming_the_option() -> None:
    lines, recorded = _run("atomic push-options", ["ci.variable=oops"], f"{Z} {A} refs/heads/x",
                           f"{Z} {A} refs/tags/t")
    assert lines == [f"ng {ref} push option refused: ci.variable='oops' must be KEY=VALUE, "
                     "KEY made of letters, digits and '_'" for ref in ("refs/heads/x", "refs/tags/t")]
    assert recorded == []  # nothing recorded, nothing moved


def test_the_ledger_checks_the_options_again() -> None:
    from gitserver.push.ledger import parse_push_options

    assert parse_push_options(["ci.skip"]) == ["ci.skip"]
    with pytest.raises(ValueError, match=re.escape("push option refused: 'ci.nope' is unknown")):
        parse_push_options(["ci.nope"])
    with pytest.raises(ValueError, match="malformed push options"):
        parse_push_options("ci.skip")
