"""The SSH daemon's caps on unauthenticated connections (gitserver.ssh.startups), as tables."""

from __future__ import annotations

import itertools
import random

import pytest

from gitserver.policy.values import MaxStartups, parse_max_startups
from gitserver.ssh.startups import StartupLimiter, source_of

HARD = parse_max_startups  # "N": a hard cap, no random drop
NONE = MaxStartups(0, 100, 0)


def never() -> float:
    """A draw above every chance below 1: only a certain drop happens."""
    return 0.999999


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


@pytest.mark.parametrize("count, chance", [
    (0, 0.0), (9, 0.0), (10, 0.30), (55, 0.65), (99, 1 - 0.7 / 90), (100, 1.0), (500, 1.0)])
def test_drop_chance_is_sshds(count: int, chance: float) -> None:
    assert parse_max_startups("10:30:100").drop_chance(count) == pytest.approx(chance)


def test_per_source_cap_leaves_room_for_other_sources() -> None:
    limiter: StartupLimiter[int] = StartupLimiter(HARD("5"), HARD("2"), chance=never)
    conns = itertools.count()
    assert limiter.admit("192.0.2.1", next(conns)).refusal is None
    assert limiter.admit("192.0.2.1", next(conns)).refusal is None
    refusal = limiter.admit("192.0.2.1", next(conns)).refusal
    assert refusal is not None and "from 192.0.2.1 (2 in progress, limit 2)" in refusal
    assert limiter.admit("2001:db8::1", 10).refusal is None
    assert limiter.admit("2001:db8::2", 11).refusal is None
    assert limiter.admit("2001:db8::3", 12).refusal is not None  # same /64
    limiter.done("192.0.2.1", 0)  # one logged in (or left): room again
    assert limiter.admit("192.0.2.1", next(conns)).refusal is None
    assert limiter.total == 4


def test_global_cap_with_one_connection_per_source() -> None:
    limiter: StartupLimiter[int] = StartupLimiter(HARD("2"), NONE, chance=never)
    assert limiter.admit("192.0.2.1", 1).refusal is None
    assert limiter.admit("192.0.2.2", 2).refusal is None
    # Nobody holds more than the newcomer would: nothing to take its place from.
    assert limiter.admit("192.0.2.3", 3).refusal == "too many unauthenticated connections; try again later"
    limiter.done("192.0.2.2", 2)
    assert limiter.admit("192.0.2.3", 3).refusal is None


def test_at_the_global_cap_a_newcomer_takes_the_place_of_the_heaviest_sources_oldest() -> None:
    limiter: StartupLimiter[str] = StartupLimiter(HARD("4"), NONE, chance=never)
    for conn in ("a1", "a2", "a3"):
        assert limiter.admit("192.0.2.1", conn).refusal is None
    assert limiter.admit("192.0.2.2", "b1").refusal is None
    admission = limiter.admit("192.0.2.3", "c1")
    assert admission.refusal is None and admission.evict == "a1"
    assert "from 192.0.2.1" in admission.evict_reason
    assert limiter.total == 4 and limiter.count("192.0.2.1") == 2
    limiter.done("192.0.2.1", "a1")  # the evicted one's end is reported too: no double count
    assert limiter.total == 4
    # 2, 1, 1: the heaviest holds only one more than a newcomer from 192.0.2.2 would: refused.
    assert limiter.admit("192.0.2.2", "b2").refusal is not None


def test_random_early_drop_spares_a_source_below_its_fair_share() -> None:
    draws = iter([0.0] * 100)  # every draw drops, whenever a drop is possible at all
    limiter: StartupLimiter[int] = StartupLimiter(parse_max_startups("4:30:100"), NONE,
                                                  chance=lambda: next(draws))
    for conn in range(4):
        assert limiter.admit("192.0.2.1", conn).refusal is None
    assert limiter.admit("192.0.2.1", 4).refusal is not None  # the flooding source
    # A quiet source is spared while it holds less than the mean (of 4 / 2, 5 / 2, ... 7 / 2).
    for held, conn in enumerate(range(5, 9)):
        assert limiter.admit("192.0.2.2", conn).refusal is None, held
    assert limiter.admit("192.0.2.2", 9).refusal is not None  # 4 of 8 / 2: no longer below


def test_a_flood_from_two_sources_never_locks_a_third_out() -> None:
    """The finding: two sources with hard caps of 50 filled the global 100, and every login
    from anywhere else was refused. With random early drop and the fair share, the flood keeps
    trying and the third source's logins all get in."""
    rng = random.Random(7)
    limiter: StartupLimiter[object] = StartupLimiter(parse_max_startups("10:30:100"),
                                                  parse_max_startups("50"), chance=rng.random)
    conns = itertools.count()
    for _ in range(2000):  # renewed as fast as they are dropped
        limiter.admit(rng.choice(["127.0.0.2", "127.0.0.3"]), next(conns))
    assert limiter.total == 100
    for login in range(20):
        admission = limiter.admit("127.0.0.1", ("user", login))
        assert admission.refusal is None, admission.refusal
        limiter.done("127.0.0.1", ("user", login))  # logged in: no longer a startup
        limiter.admit(rng.choice(["127.0.0.2", "127.0.0.3"]), next(conns))


def test_done_never_goes_below_zero() -> None:
    limiter: StartupLimiter[int] = StartupLimiter(HARD("1"), HARD("1"))
    limiter.done("192.0.2.1", 1)
    assert limiter.total == 0 and limiter.admit("192.0.2.1", 1).refusal is None


def test_at_the_connection_cap_a_login_in_progress_of_the_heaviest_source_makes_room() -> None:
    limiter: StartupLimiter[str] = StartupLimiter(NONE, NONE)
    for conn in ("a1", "a2"):
        limiter.admit("192.0.2.1", conn)
    room = limiter.make_room("192.0.2.2")
    assert room.evict == "a1" and limiter.total == 1
    assert limiter.make_room("192.0.2.2").refusal == "too many connections"  # 1 is not 2 more
