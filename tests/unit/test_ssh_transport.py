"""The SSH daemon's TCP transport: one socket write per loop turn, bytes unchanged.

The first tests count writes on a recording stand-in for asyncio's socket transport (the count
is the point, and a real socket cannot tell one send() from two); the rest run a real loopback
TCP connection through :class:`gitserver.ssh.transport.Listener`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gitserver.ssh.transport import BatchingTransport, Listener


class RecordingTransport(asyncio.Transport):
    """Records what reaches the socket layer: the writes, eof, close, abort."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def write_eof(self) -> None:
        self.events.append("eof")

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7


async def _one_turn() -> None:
    await asyncio.sleep(0)


def test_the_writes_of_one_turn_reach_the_socket_as_one_write_in_order() -> None:
    async def scenario() -> tuple[RecordingTransport, list[int]]:
        inner = RecordingTransport()
        outer = BatchingTransport(inner, asyncio.get_running_loop())
        outer.write(b"ignore")
        outer.write(bytearray(b"-packet-1"))
        outer.writelines([b"-ignore", memoryview(b"-packet-2")])
        sizes = [len(inner.writes), outer.get_write_buffer_size()]
        await _one_turn()
        outer.write(b"next turn")
        await _one_turn()
        return inner, sizes

    inner, (written_before_turn_ended, buffered) = asyncio.run(scenario())
    assert written_before_turn_ended == 0
    assert buffered == len(b"ignore-packet-1-ignore-packet-2") + 7  # collected + the socket's
    assert inner.writes == [b"ignore-packet-1-ignore-packet-2", b"next turn"]


def test_close_and_eof_send_what_was_collected_first_and_abort_drops_it() -> None:
    async def scenario() -> tuple[list[str], list[bytes], list[str], list[bytes]]:
        loop = asyncio.get_running_loop()
        closed = RecordingTransport()
        outer = BatchingTransport(closed, loop)
        outer.write(b"disconnect")
        outer.write_eof()
        outer.write(b"after eof")
        outer.close()
        outer.write(b"after close")  # dropped: the transport is closing
        await _one_turn()
        aborted = RecordingTransport()
        outer = BatchingTransport(aborted, loop)
        outer.write(b"never sent")
        outer.abort()
        await _one_turn()
        return closed.events, closed.writes, aborted.events, aborted.writes

    closed_events, closed_writes, aborted_events, aborted_writes = asyncio.run(scenario())
    assert closed_events == ["write", "eof", "write", "close"]
    assert closed_writes == [b"disconnect", b"after eof"]
    assert aborted_events == ["abort"] and aborted_writes == []


class Echo(asyncio.Protocol):
    """Stands in for an asyncssh connection: answers each chunk with many small writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data.strip() == b"bye":
            self.transport.write(b"closing\n")
            self.transport.close()
            return
        for byte in data:
            self.transport.write(bytes([byte]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def test_a_real_connection_through_the_listener_gets_every_byte_in_order() -> None:
    async def scenario() -> tuple[bytes, str, object]:
        protocols: list[Echo] = []

        def session_factory(host: str, port: int) -> Echo:
            protocols.append(Echo())
            return protocols[-1]

        server = await Listener(reuse_address=True).create_server(
            session_factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(range(256)) * 64
        writer.write(payload)
        received = await reader.readexactly(len(payload))
        writer.write(b"bye\n")
        tail = await reader.read()  # the protocol's last write, then EOF: close() flushed it
        writer.close()
        lost = await asyncio.wait_for(protocols[0].lost, 10)
        server.close()
        await server.wait_closed()
        peer = protocols[0].transport.get_extra_info("peername") if protocols[0].transport else None
        assert peer is not None and peer[0] == "127.0.0.1"
        return received + tail, type(protocols[0].transport).__name__, lost

    data, transport_type, lost = asyncio.run(scenario())
    assert data == bytes(range(256)) * 64 + b"closing\n"
    assert transport_type == "BatchingTransport"
    assert lost is None


@pytest.mark.parametrize("pending", [b"", b"x" * 10])
def test_a_connection_lost_meanwhile_discards_what_was_collected(pending: bytes) -> None:
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        outer = BatchingTransport(inner, asyncio.get_running_loop())
        outer.write(pending)
        outer.discard()
        await _one_turn()
        return inner.writes

    assert asyncio.run(scenario()) == []


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux-only")
def test_every_chunk_received_is_acknowledged_at_once() -> None:
    """Linux turns delayed ACKs on after a few exchanges (this socket would read 0 from the
    second round trip on); the listener turns quick ACKs back on before each chunk is handed
    to the connection, so a client's next small packet never waits 40 ms for our ACK."""
    async def scenario() -> list[int]:
        states: list[int] = []

        class Recorder(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                sock = self.transport.get_extra_info("socket")
                states.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))
                self.transport.write(data)

        server = await Listener().create_server(lambda host, port: Recorder(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1])
        for _ in range(10):
            writer.write(b"ping")
            await reader.readexactly(4)
        writer.close()
        server.close()
        await server.wait_closed()
        return states

    assert asyncio.run(scenario()) == [1] * 10
