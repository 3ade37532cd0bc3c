"""Which pushes pre-receive refuses whole (gitserver.push.admission), as a table; and the
daemon's side of the hook socket for it (HookService's "pre-receive" op)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitserver.git.protect import RefCommand
from gitserver.push import admission, ledger, limits
from gitserver.push.ledger import PushContext

Z, A, B = "0" * 40, "a" * 40, "b" * 40
RESERVED = "this name is reserved for gitserver archives"
NO_WRITE = "you do not have write permission"


def cmd(ref: str, old: str = Z, new: str = A) -> RefCommand:
    return RefCommand(old, new, ref)


@pytest.mark.parametrize(("commands", "can_write", "lines"), [
    # Left to proc-receive: nothing refused whole, whatever it decides ref by ref.
    ([cmd("refs/heads/main")], True, []),
    ([cmd("refs/heads/main", A, B)], True, []),  # a fast-forward or not: proc-receive's to judge
    ([cmd("refs/tags/v1", A, B)], True, []),  # a moved tag: refused there, with its own message
    ([cmd("refs/pull/1/head"), cmd("refs/heads/main")], True, []),  # a mirror's extra refs
    ([cmd("refs/tags/repour-x", A, Z)], True, []),  # deleting a reserved name brings no objects
    ([cmd("refs/heads/main", A, Z)], False, []),  # a reader's deletion brings none either
    # Refused whole, every ref named.
    ([cmd("refs/tags/repour-x")], True, [f"refs/tags/repour-x: {RESERVED}"]),
    ([cmd("refs/heads/Branch-Repour-x")], True, [f"refs/heads/Branch-Repour-x: {RESERVED}"]),
    ([cmd("refs/heads/main"), cmd("refs/heads/branch-repour-y")], True,
     [f"refs/heads/main: {admission.NOT_UPDATED}", f"refs/heads/branch-repour-y: {RESERVED}"]),
    ([cmd("refs/heads/main")], False, [f"refs/heads/main: {NO_WRITE}"]),
    # A reader is kept out whichever rule names the ref first.
    ([cmd("refs/notes/x")], False,
     ["refs/notes/x: only branches (refs/heads/) and tags (refs/tags/) may be pushed"]),
])
def test_declined(commands: list[RefCommand], can_write: bool, lines: list[str]) -> None:
    assert admission.declined(commands, can_write) == lines


def service(tmp_path: Path, can_write: bool, limit: int = 0) -> ledger.HookService:
    (tmp_path / "objects" / "tmp_objdir-incoming-q1").mkdir(parents=True)
    check = limits.QuarantineCheck(limits.PushLimits(max_blob_bytes=limit or None), tmp_path, "acme/widgets")
    return ledger.HookService(None, PushContext(repo_id=1), "http://gitserver.invalid",  # type: ignore[arg-type]
                              push_check=check, can_write=can_write)


def request(*updates: list[str]) -> dict[str, object]:
    return {"op": "pre-receive", "quarantine": "tmp_objdir-incoming-q1", "updates": list(updates)}


def test_the_daemon_answers_ok_refused_or_error(tmp_path: Path) -> None:
    writer = service(tmp_path, can_write=True)
    assert writer.handle(request([Z, A, "refs/heads/main"])) == {"ok": True}
    assert writer.handle(request([Z, A, "refs/heads/main"], [Z, A, "refs/tags/repour-x"])) == {
        "refused": f"refs/heads/main: {admission.NOT_UPDATED}\nrefs/tags/repour-x: {RESERVED}"}
    assert writer.handle(request()) == {"error": "malformed ref updates in hook message"}
    assert writer.handle({**request([Z, A, "refs/heads/main"]), "quarantine": "../x"}) == {
        "error": "malformed quarantine name in hook message"}


def test_the_daemon_decides_from_the_permission_it_was_given(tmp_path: Path) -> None:
    assert service(tmp_path, can_write=False).handle(request([Z, A, "refs/heads/main"])) == {
        "refused": f"refs/heads/main: {NO_WRITE}"}


def test_the_limits_op_of_older_hooks_still_answers(tmp_path: Path) -> None:
    """Hooks installed by an older release ask for the limits alone; the permission and the
    reserved names are then left to proc-receive, as before."""
    (tmp_path / "objects" / "tmp_objdir-incoming-q1" / "pack").mkdir(parents=True)
    (tmp_path / "objects" / "tmp_objdir-incoming-q1" / "pack" / "p.pack").write_bytes(b"x" * 100)
    check = limits.QuarantineCheck(limits.PushLimits(max_push_bytes=10), tmp_path, "acme/widgets")
    hooks = ledger.HookService(None, PushContext(repo_id=1), "http://gitserver.invalid",  # type: ignore[arg-type]
                               push_check=check)
    reply = hooks.handle({"op": "limits", "quarantine": "tmp_objdir-incoming-q1"})
    assert str(reply.get("refused", "")).startswith("push refused: GITSERVER_MAX_PUSH_BYTES is 10 bytes")
