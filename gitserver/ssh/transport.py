"""The SSH daemon's TCP connections: writes batched per event-loop turn, ACKs sent at once.

asyncssh accepts, through its public ``tunnel`` argument of ``create_server``, any object with
``create_server(session_factory, host, port)`` to open its listener (asyncssh's own use is
listening through another SSH connection). :class:`Listener` listens on TCP with asyncio, as
asyncssh would, and puts :class:`_Protocol` between each socket and its asyncssh connection.
No asyncssh code is replaced or patched. Two things change on the way:

**Writes are batched.** asyncssh writes every SSH packet to its transport on its own: a
clone's channel data goes out as 32 KiB packets (the client's maximum), each preceded by an
empty ``MSG_IGNORE``, and asyncio's socket transport tries a ``send()`` for each write while
its buffer is empty: two system calls, and two trips through the TCP stack, per 32 KiB.
:class:`BatchingTransport` collects the writes of one loop turn and hands them to the socket as
one write at the end of it. Nothing is reordered or dropped: ``close()`` and ``write_eof()``
send what is collected first, and ``abort()`` discards it as asyncio does its own buffer. What
is delayed is at most the rest of the current turn of the loop.

**Every segment received is acknowledged at once** (``TCP_QUICKACK``, Linux). The OpenSSH
client turns Nagle's algorithm off only once its session is set up, and during the handshake it
sends some messages back to back, with no answer from the server in between. The second then
waits in the client's kernel until the first is acknowledged, and Linux delays that
acknowledgement by up to 40 ms when the server has nothing to send back. Such waits made up
most of an ``ls-remote``: median 104 ms, 17-20 ms with quick ACKs (docs/performance.md). Linux
leaves quick-ACK mode again on its own, so it is set after every read: one ``setsockopt`` per
received chunk, which costs nothing measurable on a clone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any


class BatchingTransport(asyncio.Transport):
    """A write transport over *transport* that writes once per loop turn (see the module)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0

    # What the batching changes.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._transport.is_closing():
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._pending_size += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what this turn collected to the socket as one write."""
        if self._pending and not self._transport.is_closing():
            chunks = self._pending
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        self._pending = []
        self._pending_size = 0

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.discard()
        self._transport.abort()

    def discard(self) -> None:
        """Drop what is collected and not yet written (the connection is gone)."""
        self._pending = []
        self._pending_size = 0

    def get_write_buffer_size(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()

    # What passes through unchanged.

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class _Protocol(asyncio.Protocol):
    """Between asyncio's socket transport and one asyncssh connection (see the module)."""

    def __init__(self, connection: asyncio.Protocol) -> None:
        self.connection = connection
        self.transport: BatchingTransport | None = None
        self.quickack: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = BatchingTransport(transport, asyncio.get_running_loop())
        self.quickack = _quickack_of(transport.get_extra_info("socket"))
        self.connection.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.quickack is not None:
            self.quickack()
        self.connection.data_received(data)

    def eof_received(self) -> bool | None:
        return self.connection.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport.discard()
        self.connection.connection_lost(exc)

    def pause_writing(self) -> None:
        self.connection.pause_writing()

    def resume_writing(self) -> None:
        self.connection.resume_writing()


def _quickack_of(sock: Any) -> Callable[[], None] | None:
    """What sets ``TCP_QUICKACK`` on *sock*; None where there is no such option (not Linux,
    not TCP)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None

    def quickack() -> None:
        with contextlib.suppress(OSError):  # the connection is going; asyncio will tell
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    return quickack


class Listener:
    """What asyncssh's ``tunnel`` argument takes to open a listener (see the module)."""

    def __init__(self, **create_server_options: Any) -> None:
        self.options = create_server_options

    async def create_server(self, session_factory: Callable[[str, int], Any],
                            listen_host: str, listen_port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Protocol(session_factory(listen_host, listen_port)),
            listen_host, listen_port, **self.options)
