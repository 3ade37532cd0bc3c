"""The syntax of setting values that are more than a type: OpenSSH's ``MaxStartups`` and the
sandbox's UID ranges. Pure; gitserver.config checks them when it loads, and the parts that
apply them read the parsed values."""

from __future__ import annotations

import dataclasses
import re

# --- SSH MaxStartups (parsed when the config loads; gitserver.ssh.startups applies them) -----------

MAX_STARTUPS_RE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*:\s*(\d+)\s*)?$")


@dataclasses.dataclass(frozen=True)
class MaxStartups:
    """OpenSSH's ``MaxStartups start:rate:full``: below ``start`` logins in progress none is
    dropped; from there ``rate`` % of new ones are, rising linearly to all of them at ``full``.
    ``full`` 0 means no cap."""

    start: int
    rate: int
    full: int

    def drop_chance(self, count: int) -> float:
        """The chance that a new login is dropped while ``count`` are in progress (sshd's
        ``should_drop_connection``)."""
        if not self.full or count < self.start:
            return 0.0
        if count >= self.full:
            return 1.0
        share = (count - self.start) / (self.full - self.start)
        return (self.rate + (100 - self.rate) * share) / 100


def parse_max_startups(text: str) -> MaxStartups:
    """``start:rate:full``, or ``N`` for ``N:100:N`` (``0``: no cap); ValueError saying why."""
    match = MAX_STARTUPS_RE.match(str(text))
    if not match:
        raise ValueError(f"expected start:rate:full (like OpenSSH's MaxStartups 10:30:100) "
                         f"or one number, got {text!r}")
    if match.group(2) is None:
        count = int(match.group(1))
        return MaxStartups(count, 100, count)
    start, rate, full = (int(match.group(i)) for i in (1, 2, 3))
    if not 1 <= rate <= 100:
        raise ValueError(f"the rate of {text!r} is a percentage, 1 to 100")
    if full < 1 or start > full:
        raise ValueError(f"{text!r}: expected start <= full and full >= 1")
    return MaxStartups(start, rate, full)


# --- sandbox UID ranges (parsed when the config loads; gitserver.process.sandbox leases UIDs) ------

UID_RANGE_RE = re.compile(r"^\s*(\d+)\s*([:-])\s*(\d+)\s*$")
# The lowest UID a range may start at: below are the host's own system and login users.
MIN_SANDBOX_UID = 100000
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@dataclasses.dataclass(frozen=True)
class UidRange:
    """``first`` and ``count`` UIDs, like a line of /etc/subuid."""

    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


def parse_uid_range(text: str) -> UidRange:
    """``START:COUNT`` (the /etc/subuid form) or ``FIRST-LAST``; raises ValueError saying why."""
    match = UID_RANGE_RE.match(text)
    if not match:
        raise ValueError(f"expected START:COUNT or FIRST-LAST, got {text!r}")
    first, sep, other = int(match.group(1)), match.group(2), int(match.group(3))
    count = other if sep == ":" else other - first + 1
    if count < 1:
        raise ValueError(f"{text!r} holds no UID")
    if first < MIN_SANDBOX_UID:
        raise ValueError(f"{text!r} starts below {MIN_SANDBOX_UID} (the host's own users live there)")
    if first + count - 1 > MAX_UID:
        raise ValueError(f"{text!r} ends above the largest UID {MAX_UID}")
    return UidRange(first, count)
