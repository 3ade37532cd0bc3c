"""The SSH daemon's caps on unauthenticated connections (gitserver.ssh.startups), as tables."""

from __future__ import annotations

import pytest

from gitserver.ssh.startups import StartupLimiter, source_of


@pytest.mark.parametrize("address, source", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8::ffff:1", "2001:db8::/64"),
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not an address", "not an address"),
])
def test_source_of(address: str, source: str) -> None:
    assert source_of(address) == source


def test_per_source_cap_leaves_room_for_other_sources() -> None:
    limiter = StartupLimiter(max_startups=5, per_source=2)
    assert limiter.admit("192.0.2.1") is None
    assert limiter.admit("192.0.2.1") is None
    refusal = limiter.admit("192.0.2.1")
    assert refusal is not None and "from 192.0.2.1 (at most 2)" in refusal
    assert limiter.admit("2001:db8::1") is None
    assert limiter.admit("2001:db8::2") is None
    assert limiter.admit("2001:db8::3") is not None  # same /64
    limiter.done("192.0.2.1")  # one logged in (or left): room again
    assert limiter.admit("192.0.2.1") is None
    assert limiter.total == 4


def test_global_cap() -> None:
    limiter = StartupLimiter(max_startups=2, per_source=0)
    assert limiter.admit("192.0.2.1") is None
    assert limiter.admit("192.0.2.2") is None
    assert limiter.admit("192.0.2.3") == "too many unauthenticated connections; try again later"
    limiter.done("192.0.2.2")
    assert limiter.admit("192.0.2.3") is None


def test_done_never_goes_below_zero() -> None:
    limiter = StartupLimiter(max_startups=1, per_source=1)
    limiter.done("192.0.2.1")
    assert limiter.total == 0 and limiter.admit("192.0.2.1") is None
