"""Who may start an SSH login: caps on connections that have not authenticated yet.

Like OpenSSH's ``MaxStartups`` and ``PerSourceMaxStartups``: a client that opens sockets and
never logs in holds a slot until the login grace time ends; without a cap per source address,
one host with a few hundred such sockets fills the global connection cap and locks everyone
out. Pure bookkeeping, no sockets: the asyncssh server (gitserver.ssh.server) asks
:meth:`StartupLimiter.admit` at each new connection and reports how it ends.
"""

from __future__ import annotations

import collections
import ipaddress


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


class StartupLimiter:
    """Counts unauthenticated connections, in total and per source."""

    def __init__(self, max_startups: int, per_source: int) -> None:
        self.max_startups = max_startups
        self.per_source = per_source
        self.by_source: collections.Counter[str] = collections.Counter()
        self.total = 0

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; the reason to refuse it, or None.

        A refused connection is not counted (do not report its end).
        """
        source = source_of(address)
        if self.per_source and self.by_source[source] >= self.per_source:
            return (f"too many unauthenticated connections from {source} "
                    f"(at most {self.per_source}); try again later")
        if self.max_startups and self.total >= self.max_startups:
            return "too many unauthenticated connections; try again later"
        self.by_source[source] += 1
        self.total += 1
        return None

    def done(self, address: str) -> None:
        """An admitted connection authenticated or went away before that."""
        source = source_of(address)
        if self.by_source[source] <= 0:
            return
        self.by_source[source] -= 1
        if not self.by_source[source]:
            del self.by_source[source]
        self.total -= 1
