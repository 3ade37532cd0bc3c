"""The proc-receive protocol of gitserver.hookrun, driven with in-memory streams."""

from __future__ import annotations

import io

import pytest

from gitserver.git.protect import RefCommand
from gitserver.hookrun import pkt, proc_receive, read_pkt

Z, A, B = "0" * 40, "a" * 40, "b" * 40
FLUSH = b"0000"


def server_stream(capabilities: str, *commands: str) -> io.BytesIO:
    data = pkt(f"version=1\0{capabilities}\n") + FLUSH
    data += b"".join(pkt(c + "\n") for c in commands) + FLUSH
    return io.BytesIO(data)


def replies(out: io.BytesIO) -> list[str]:
    """The hook's answer: its version line and flush, then one line per ref and a flush."""
    out.seek(0)
    assert read_pkt(out) == b"version=1\n"
    assert read_pkt(out) is None
    lines = []
    while (payload := read_pkt(out)) is not None:
        lines.append(payload.decode().rstrip("\n"))
    assert out.read() == b""
    return lines


def run(capabilities: str, *commands: str, permission: str = "write",
        fail: set[str] | None = None) -> tuple[list[str], list[list[RefCommand]]]:
    applied: list[list[RefCommand]] = []

    def update(cmds: list[RefCommand], atomic: bool) -> list[str | None]:
        applied.append(cmds)
        return ["lost a race" if c.ref in (fail or set()) else None for c in cmds]

    out = io.BytesIO()
    rc = proc_receive(server_stream(capabilities, *commands), out, {"GITSERVER_PERMISSION": permission},
                      is_ancestor=lambda old, new: (old, new) == (A, B), update_refs=update)
    assert rc == 0
    return replies(out), applied


def test_each_ref_gets_its_own_verdict() -> None:
    lines, applied = run("", f"{Z} {A} refs/heads/new", f"{B} {A} refs/heads/main",
                         f"{A} {Z} refs/tags/v1", f"{Z} {A} refs/tags/repour-1")
    assert lines == [
        "ok refs/heads/new",
        "ng refs/heads/main non-fast-forward pushes are not allowed",
        "ng refs/tags/v1 deleting branches and tags is not allowed",
        "ng refs/tags/repour-1 this name is reserved for gitserver archives",
    ]
    assert [c.ref for c in applied[0]] == ["refs/heads/new"]


def test_atomic_push_refuses_all_when_one_is_refused() -> None:
    lines, applied = run("atomic", f"{Z} {A} refs/heads/new", f"{B} {A} refs/heads/main")
    assert lines[0].startswith("ng refs/heads/new atomic push failed")
    assert lines[1] == "ng refs/heads/main non-fast-forward pushes are not allowed"
    assert applied == []


def test_lost_race_is_reported() -> None:
    lines, _ = run("", f"{A} {B} refs/heads/main", fail={"refs/heads/main"})
    assert lines == ["ng refs/heads/main lost a race"]


def test_reader_cannot_write() -> None:
    lines, applied = run("", f"{Z} {A} refs/heads/main", permission="read")
    assert lines == ["ng refs/heads/main you do not have write permission"]
    assert applied == []


@pytest.mark.parametrize("header", [b"+0x1", b" 12 ", b"zzzz", b"0003", b"ffff"])
def test_bad_pkt_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ValueError):
        read_pkt(io.BytesIO(header + b"x" * 100))


def test_truncated_stream() -> None:
    with pytest.raises(EOFError):
        read_pkt(io.BytesIO(b"0010abc"))
