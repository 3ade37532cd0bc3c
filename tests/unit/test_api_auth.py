"""Reading API credentials from the Authorization header (gitserver.api.auth)."""

from __future__ import annotations

import base64

import pytest

from gitserver.api.auth import scope_allows, token_from_header
from gitserver.errors import Unauthenticated


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "token"), [
    (None, None),
    ("", None),
    ("   ", None),
    ("Bearer gst_abc", "gst_abc"),
    ("bearer   gst_abc  ", "gst_abc"),
    (basic("git:gst_abc"), "gst_abc"),
    (basic("anything:gst:with:colons"), "gst:with:colons"),
])
def test_token_found(header: str | None, token: str | None) -> None:
    assert token_from_header(header) == token


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token gst_abc", "gst_abc", "Basic !!!",
                                    basic("no-colon"), basic("user:"),
                                    "Basic " + base64.b64encode(b"\xff:\xfe").decode(), "Digest username=x"])
def test_unusable_header_is_401_not_anonymous(header: str) -> None:
    with pytest.raises(Unauthenticated):
        token_from_header(header)


@pytest.mark.parametrize(("scopes", "need", "allowed"), [
    (None, "admin", True),
    (frozenset({"read"}), "read", True),
    (frozenset({"read"}), "write", False),
    (frozenset({"write"}), "read", True),
    (frozenset({"write"}), "admin", False),
    (frozenset({"admin"}), "write", True),
    (frozenset(), "read", False),
    (frozenset({"bogus"}), "read", False),
])
def test_scopes_are_ordered(scopes: frozenset[str] | None, need: str, allowed: bool) -> None:
    assert scope_allows(scopes, need) is allowed
