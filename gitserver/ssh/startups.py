"""Who may start an SSH login: caps on connections that have not authenticated yet.

Like OpenSSH's ``MaxStartups start:rate:full``, applied in all and per source address: a
client that opens sockets and never logs in holds a slot until the login grace time ends.
Hard caps alone let a few hosts fill every slot (two sources at a per-source cap of 50 fill a
global one of 100) and renew them as fast as they time out. So, as in sshd, new logins are
dropped at random from ``start`` on, and beyond that the flood is made to pay, not the others:

- the global random drop spares a source holding less than its fair share (the logins in
  progress divided by the sources that hold them), so a quiet user is not dropped because two
  others flood;
- at the global ``full``, and at the daemon's connection cap, a login from a lighter source
  takes the place of the oldest login of the source that holds the most, instead of being
  refused.

Pure bookkeeping, no sockets: the asyncssh server (gitserver.ssh.server) asks
:meth:`StartupLimiter.admit` at each new connection, disconnects what it is told to evict, and
reports how each admitted one ends.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from gitserver.policy.values import MaxStartups

T = TypeVar("T", bound=Hashable)


def source_of(address: str) -> str:
    """The key a source is counted under: the IP address, IPv4-mapped IPv6 folded to IPv4.

    Every address of one IPv6 /64 counts as one source: a single host usually has a whole /64
    and could otherwise pick a new address for each connection.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclasses.dataclass(frozen=True)
class Admission(Generic[T]):
    """What :meth:`StartupLimiter.admit` decided: ``refusal`` (why the new connection is
    refused), or admitted, possibly in place of ``evict`` (to be disconnected with
    ``evict_reason``; no longer counted)."""

    refusal: str | None = None
    evict: T | None = None
    evict_reason: str = ""


class StartupLimiter(Generic[T]):
    """Counts unauthenticated connections (any hashable token each), in total and per source."""

    def __init__(self, total: MaxStartups, per_source: MaxStartups,
                 chance: Callable[[], float] = random.random) -> None:
        self.limits = total
        self.per_source = per_source
        self.chance = chance  # uniform in [0, 1); injected so tests decide the draws
        # Per source, its connections oldest first (dicts keep insertion order).
        self.by_source: dict[str, dict[T, None]] = {}
        self.total = 0

    def count(self, source: str) -> int:
        return len(self.by_source.get(source, ()))

    def admit(self, address: str, conn: T) -> Admission[T]:
        """Decide on a new connection ``conn`` from ``address``; count it when admitted."""
        source = source_of(address)
        held = self.count(source)
        if self._drops(self.per_source, held):
            return Admission(refusal=f"too many unauthenticated connections from {source} "
                             f"({held} in progress, limit {_spelled(self.per_source)}); "
                             "try again later")
        admission: Admission[T] = Admission()
        if self.limits.full and self.total >= self.limits.full:
            admission = self._make_room(held)
            if admission.refusal is not None:
                return admission
        elif not self._below_fair_share(held) and self._drops(self.limits, self.total):
            return Admission(refusal=_GLOBAL_REFUSAL)
        self.by_source.setdefault(source, {})[conn] = None
        self.total += 1
        return admission

    def make_room(self, address: str) -> Admission[T]:
        """The daemon's connection cap is reached: evict a login in progress for a connection
        from ``address`` as at the global ``full`` (half-open connections can then never
        fill that cap either), or the refusal. The new connection is not counted here."""
        admission = self._make_room(self.count(source_of(address)))
        return Admission(refusal="too many connections") if admission.refusal else admission

    def done(self, address: str, conn: T) -> None:
        """An admitted connection authenticated, went away, or was evicted (then a no-op)."""
        self._forget(source_of(address), conn)

    def _forget(self, source: str, conn: T) -> None:
        held = self.by_source.get(source)
        if held is None or conn not in held:
            return
        del held[conn]
        if not held:
            del self.by_source[source]
        self.total -= 1

    def _drops(self, limits: MaxStartups, count: int) -> bool:
        chance = limits.drop_chance(count)
        return chance >= 1.0 or (chance > 0.0 and self.chance() < chance)

    def _below_fair_share(self, held: int) -> bool:
        sources = len(self.by_source) + (0 if held else 1)
        return held * sources < self.total

    def _make_room(self, held: int) -> Admission[T]:
        """At the global cap: evict the oldest login of the heaviest source, when that source
        holds at least two more than the newcomer's (so the shares only get more even)."""
        heaviest = max(self.by_source, key=lambda s: len(self.by_source[s]), default=None)
        if heaviest is None or len(self.by_source[heaviest]) < held + 2:
            return Admission(refusal=_GLOBAL_REFUSAL)
        victim = next(iter(self.by_source[heaviest]))
        self._forget(heaviest, victim)
        return Admission(evict=victim, evict_reason=(
            f"too many unauthenticated connections from {heaviest}; the oldest is closed "
            "to let another source in; try again later"))


_GLOBAL_REFUSAL = "too many unauthenticated connections; try again later"


def _spelled(limits: MaxStartups) -> str:
    if limits.start == limits.full:
        return str(limits.full)
    return f"{limits.start}:{limits.rate}:{limits.full}"
