"""The SSH daemon's graceful shutdown: running transfers get a grace period, then go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gitserver.ssh.server import Daemon

log = logging.getLogger(__name__)


async def drain(daemon: Daemon, grace: float) -> None:
    """Let running transfers finish for ``grace`` seconds, then kill what is left."""
    deadline = asyncio.get_running_loop().time() + grace
    while ((daemon.children or daemon.open_channels)
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.1)
    if daemon.children:
        log.warning("killing %d transfer(s) still running after %ss", len(daemon.children), grace)
    await asyncio.gather(*(child.kill() for child in list(daemon.children)),
                         return_exceptions=True)
    for conn in list(daemon.connections):
        conn.close()
    for conn in list(daemon.connections):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 2)
