"""Which branch becomes HEAD after a push (pure rule)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitserver.git import head

MAIN, MASTER, DEV = "refs/heads/main", "refs/heads/master", "refs/heads/dev"


@pytest.mark.parametrize(("current", "unborn", "pushed", "expected"), [
    (MAIN, True, [MASTER], MASTER),                 # the first push brings master
    (MAIN, True, [DEV, MASTER], MASTER),            # main, then master, win over push order
    (MAIN, True, [DEV, "refs/heads/x"], DEV),       # else the first branch pushed
    (MAIN, True, [MAIN, DEV], None),                # HEAD's own branch arrived
    (MAIN, True, ["refs/tags/v1"], None),           # a tag is no branch to check out
    (MAIN, True, [], None),
    (MAIN, False, [MASTER], None),                  # HEAD exists: never moved by a push
])
def test_choose_head(current: str, unborn: bool, pushed: list[str], expected: str | None) -> None:
    assert head.choose_head(current, unborn, pushed) == expected


@pytest.mark.parametrize(("content", "expected"), [
    ("ref: refs/heads/main\n", "main"),
    ("ref: refs/heads/feature/x\n", "feature/x"),
    ("ref: refs/tags/v1\n", None),
    ("0123456789012345678901234567890123456789\n", None),
])
def test_default_branch_from_head_file(tmp_path: Path, content: str, expected: str | None) -> None:
    (tmp_path / "HEAD").write_text(content)
    assert head.default_branch(tmp_path) == expected


def test_no_git_dir_means_nothing_is_touched() -> None:
    assert head.adopt_pushed_branch([MASTER], None) is None
