"""gitserver.git.refs: the ref prefixes and the names built from them."""

from __future__ import annotations

import pytest

from gitserver.git import refs


@pytest.mark.parametrize(("ref", "kept_as"), [
    ("refs/heads/main", "refs/origin/heads/main"),
    ("refs/tags/v1", "refs/origin/tags/v1"),
    (refs.HEADS, "refs/origin/heads/"),
    (refs.PREFIX, "refs/origin/"),
])
def test_a_fetched_ref_is_kept_under_its_remote(ref: str, kept_as: str) -> None:
    assert refs.namespaced("origin", ref) == kept_as


def test_the_prefixes_are_git_s() -> None:
    assert (refs.PREFIX, refs.HEADS, refs.TAGS) == ("refs/", "refs/heads/", "refs/tags/")
