"""Table tests of the protected-history rules (gitserver.git.protect.check)."""

from __future__ import annotations

import pytest

from gitserver.git.protect import RULE_MESSAGES, RefCommand, check

Z = "0" * 40
A = "a" * 40
B = "b" * 40


def ancestor_if_a_before_b(old: str, new: str) -> bool:
    return (old, new) == (A, B)


CASES = [
    # (old, new, ref, can_write, expected rule or None)
    (Z, A, "refs/heads/main", True, None),
    (A, B, "refs/heads/main", True, None),
    (B, A, "refs/heads/main", True, "non_fast_forward"),
    (A, Z, "refs/heads/main", True, "delete"),
    (Z, A, "refs/tags/v1", True, None),
    (A, B, "refs/tags/v1", True, "tag_move"),
    (A, Z, "refs/tags/v1", True, "delete"),
    (Z, A, "refs/tags/repour-123", True, "reserved"),
    (Z, A, "refs/heads/branch-repour-123", True, "reserved"),
    (Z, A, "refs/heads/main", False, "no_write"),
    (Z, A, "refs/notes/commits", True, "not_pushable"),
    (Z, A, "refs/heads/a..b", True, "invalid_ref"),
    (Z, A, "refs/heads/x.lock", True, "invalid_ref"),
    (Z, A, "refs/heads/has space", True, "invalid_ref"),
    (Z, A, "refs/heads/ü", True, "invalid_ref"),
    (Z, A, "refs/heads/a\nb", True, "invalid_ref"),
    (Z, A, "refs/heads/trailing/", True, "invalid_ref"),
    (Z, A, "refs/heads/.hidden", True, "invalid_ref"),
    (Z, A, "refs/heads/x@{1}", True, "invalid_ref"),
    (Z, A, "HEAD", True, "invalid_ref"),
    (Z, "nothex", "refs/heads/main", True, "bad_object"),
    (A, A, "refs/tags/v1", True, None),  # no-op update
]


@pytest.mark.parametrize(("old", "new", "ref", "can_write", "rule"), CASES)
def test_rules(old: str, new: str, ref: str, can_write: bool, rule: str | None) -> None:
    refusal = check(RefCommand(old, new, ref), can_write=can_write, is_ancestor=ancestor_if_a_before_b)
    assert (refusal.rule if refusal else None) == rule
    if refusal:
        assert refusal.ref == ref
        assert refusal.message.startswith(RULE_MESSAGES[rule])  # details may follow ': …'


def test_reserved_checked_before_permission() -> None:
    """A reader learns that the name is reserved, not merely that it may not write."""
    refusal = check(RefCommand(Z, A, "refs/tags/repour-x"), can_write=False, is_ancestor=ancestor_if_a_before_b)
    assert refusal is not None and refusal.rule == "reserved"


def test_ancestry_asked_only_for_branch_updates() -> None:
    def fail(_old: str, _new: str) -> bool:
        raise AssertionError("is_ancestor must not be called")

    assert check(RefCommand(Z, A, "refs/heads/new"), can_write=True, is_ancestor=fail) is None
    assert check(RefCommand(A, B, "refs/tags/v"), can_write=True, is_ancestor=fail).rule == "tag_move"
