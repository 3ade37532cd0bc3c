"""The SSH daemon's graceful shutdown: running transfers get a grace period, then go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection
from typing import Protocol

import asyncssh

log = logging.getLogger(__name__)


class _Child(Protocol):
    def kill(self) -> Awaitable[None]: ...


class Draining(Protocol):
    """What :func:`drain` needs of the daemon (gitserver.ssh.server.Daemon)."""

    @property
    def children(self) -> Collection[_Child]: ...

    @property
    def open_channels(self) -> int: ...

    @property
    def connections(self) -> Collection[asyncssh.SSHServerConnection]: ...


async def drain(daemon: Draining, grace: float) -> None:
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
