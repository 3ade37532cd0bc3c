"""What a pusher reads for refused names: the reason, and a hint for 'git push --mirror'."""

from __future__ import annotations

import pytest

from gitserver.git import protect
from gitserver.push.report import refusals_from_report

Z, A = "0" * 40, "a" * 40
MIRROR = "'git push --mirror' copies and deletes every ref; push with 'git push --all && git push --tags' instead"


@pytest.mark.parametrize(("old", "new", "ref", "message"), [
    (Z, A, "refs/heads/café",
     "invalid ref name: ref names must be ASCII; this one contains 'é' (U+00E9), which macOS, "
     "Windows and Linux clients would store differently"),
    (Z, A, "refs/heads/a..b", "invalid ref name: ref name contains '..', '@{' or '//'"),
    (Z, A, "refs/pull/12/head",
     f"only branches (refs/heads/) and tags (refs/tags/) may be pushed: {MIRROR}"),
    (Z, A, "refs/remotes/origin/main",
     f"only branches (refs/heads/) and tags (refs/tags/) may be pushed: {MIRROR}"),
    (Z, A, "refs/notes/commits", "only branches (refs/heads/) and tags (refs/tags/) may be pushed"),
    (A, Z, "refs/tags/repour-" + A, f"this name is reserved for gitserver archives: {MIRROR}"),
    (Z, A, "refs/tags/repour-x", "this name is reserved for gitserver archives"),
    (A, Z, "refs/heads/main", "deleting branches and tags is not allowed"),
])
def test_refusal_messages(old: str, new: str, ref: str, message: str) -> None:
    refusal = protect.check(protect.RefCommand(old, new, ref), can_write=True,
                            is_ancestor=lambda o, n: True)
    assert refusal is not None and refusal.message == message
    # metrics still count the rule behind a detailed message
    assert refusals_from_report(f"ng {ref} {message}\n") == [refusal.rule]
