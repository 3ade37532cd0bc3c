"""When an SSH channel has gone silent: nothing moved either way for a while.

The connection's idle timeout (``ssh_idle_timeout``) runs only while no channel is open, so a
client that starts ``git-upload-pack`` and never sends a ``want`` would hold that git process
for as long as it keeps the connection alive. A channel is silent when the client sent no
byte and took no byte of git's output: a long clone moves data all the time (git's own
keepalives fill its quiet spells, ``uploadpack.keepAlive``), and a slow reader still takes
some, but a client that neither sends nor reads holds git for nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

# Looks per timeout: a silent channel is noticed at most 2/CHECKS of a timeout late.
CHECKS = 4


@dataclasses.dataclass
class Traffic:
    """One channel's bytes: from the client, and of git's output handed to the channel."""

    received: int = 0
    written: int = 0

    def moved(self, channel: Any) -> int:
        """Bytes that really crossed (what still waits in the channel's buffer for the
        client's window did not yet); only grows."""
        return self.received + self.written - channel.get_write_buffer_size()


async def until_silent(timeout: float, moved: Callable[[], int]) -> None:
    """Return once ``moved()`` (a count that only grows) has not changed for ``timeout``
    seconds."""
    loop = asyncio.get_running_loop()
    last, since = moved(), loop.time()
    while True:
        await asyncio.sleep(timeout / CHECKS)
        now, value = loop.time(), moved()
        if value != last:
            last, since = value, now
        elif now - since >= timeout:
            return
