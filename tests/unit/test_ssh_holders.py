"""The SSH daemon's caps on authenticated connections per user and per source
(gitserver.ssh.holders), as tables."""

from __future__ import annotations

from gitserver.policy import access
from gitserver.ssh.holders import HolderLimiter, holder_of

ALICE = access.Principal(kind="user", user_id=1, user_name="alice", key_fingerprint="SHA256:a")
ALICE_OTHER_KEY = access.Principal(kind="user", user_id=1, user_name="alice", key_fingerprint="SHA256:b")
DEPLOY = access.Principal(kind="deploy_key", key_id=9, key_fingerprint="SHA256:d")


def test_a_user_is_counted_across_keys_and_a_deploy_key_by_itself() -> None:
    assert holder_of(ALICE)[0] == holder_of(ALICE_OTHER_KEY)[0]
    assert holder_of(ALICE)[1] == "user alice"
    assert holder_of(DEPLOY) == (("key", "SHA256:d"), "deploy key SHA256:d")


def test_one_user_cannot_hold_more_than_the_per_user_cap() -> None:
    limiter = HolderLimiter(per_user=2, per_source=0)
    holder, label = holder_of(ALICE)
    assert limiter.admit(holder, label, "192.0.2.1") is None
    assert limiter.admit(holder, label, "192.0.2.2") is None
    refusal = limiter.admit(holder, label, "192.0.2.3")
    assert refusal == ("too many SSH connections for user alice (at most 2, "
                       "GITSERVER_SSH_MAX_CONNECTIONS_PER_USER); close some and try again")
    assert limiter.admit(*holder_of(DEPLOY), "192.0.2.3") is None  # others still get in
    limiter.done(holder, "192.0.2.1")
    assert limiter.admit(holder, label, "192.0.2.3") is None


def test_one_source_cannot_hold_more_than_the_per_source_cap() -> None:
    limiter = HolderLimiter(per_user=0, per_source=2)
    assert limiter.admit(*holder_of(ALICE), "2001:db8::1") is None
    assert limiter.admit(*holder_of(DEPLOY), "2001:db8::2") is None
    refusal = limiter.admit(("user", 3), "user carol", "2001:db8::3")  # same /64
    assert refusal is not None and "from 2001:db8::/64 (at most 2, GITSERVER_SSH_MAX_CONNECTIONS_PER_SOURCE)" in refusal
    assert limiter.admit(("user", 3), "user carol", "192.0.2.1") is None


def test_refused_connections_are_not_counted_and_ends_never_go_below_zero() -> None:
    limiter = HolderLimiter(per_user=1, per_source=0)
    holder, label = holder_of(ALICE)
    assert limiter.admit(holder, label, "192.0.2.1") is None
    assert limiter.admit(holder, label, "192.0.2.1") is not None
    limiter.done(holder, "192.0.2.1")
    limiter.done(holder, "192.0.2.1")
    assert not limiter.by_holder and not limiter.by_source
    assert limiter.admit(holder, label, "192.0.2.1") is None
