"""Who holds the SSH daemon's connections: caps on authenticated connections per user and per
source address.

``ssh_max_connections`` alone lets one user (or one host) hold every connection of the daemon,
each kept open by a multiplexing master or a silent command, and lock everyone else out. With a
cap per user and per source, filling the daemon takes several users and several hosts. Pure
bookkeeping, no sockets: the asyncssh server (gitserver.ssh.server) asks
:meth:`HolderLimiter.admit` once a connection has authenticated and reports its end.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import TypeVar

from gitserver.policy import access
from gitserver.ssh.startups import source_of

K = TypeVar("K", bound=Hashable)
PER_USER_SETTING = "GITSERVER_SSH_MAX_CONNECTIONS_PER_USER"
PER_SOURCE_SETTING = "GITSERVER_SSH_MAX_CONNECTIONS_PER_SOURCE"


def holder_of(principal: access.Principal) -> tuple[Hashable, str]:
    """What a connection is counted under, and how the refusal names it: the user, or for a
    deploy key (which belongs to no user) the key itself."""
    if principal.user_id is not None:
        return ("user", principal.user_id), f"user {principal.user_name}"
    return ("key", principal.key_fingerprint), f"deploy key {principal.key_fingerprint}"


class HolderLimiter:
    """Counts authenticated connections per holder (see :func:`holder_of`) and per source."""

    def __init__(self, per_user: int, per_source: int) -> None:
        self.per_user = per_user
        self.per_source = per_source
        self.by_holder: collections.Counter[Hashable] = collections.Counter()
        self.by_source: collections.Counter[str] = collections.Counter()

    def admit(self, holder: Hashable, label: str, address: str) -> str | None:
        """Count a connection of ``holder`` (named ``label``) from ``address``; the reason to
        refuse it, or None. A refused connection is not counted (do not report its end)."""
        source = source_of(address)
        if self.per_user and self.by_holder[holder] >= self.per_user:
            return (f"too many SSH connections for {label} (at most {self.per_user}, "
                    f"{PER_USER_SETTING}); close some and try again")
        if self.per_source and self.by_source[source] >= self.per_source:
            return (f"too many SSH connections from {source} (at most {self.per_source}, "
                    f"{PER_SOURCE_SETTING}); close some and try again")
        self.by_holder[holder] += 1
        self.by_source[source] += 1
        return None

    def done(self, holder: Hashable, address: str) -> None:
        """An admitted connection ended."""
        _decrement(self.by_holder, holder)
        _decrement(self.by_source, source_of(address))


def _decrement(counter: collections.Counter[K], key: K) -> None:
    if counter[key] <= 1:
        counter.pop(key, None)
    else:
        counter[key] -= 1
