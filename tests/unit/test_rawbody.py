"""gitserver.api.rawbody: a Content-Length body read from gunicorn's socket, with gunicorn's own
reader objects (gunicorn.http.body) over a real socket pair, so that what gunicorn had buffered
comes first, a pipelined request stays gunicorn's, and a reader that stops early leaves the
connection marked for closing."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from gitserver.api import rawbody

NEXT_REQUEST = b"GET /next HTTP/1.1\r\n\r\n"
Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    server, client = socket.socketpair()
    with server, client:
        yield server, client


def gunicorn_body(server: socket.socket, length: int, buffered: bytes) -> tuple[Body, SocketUnreader]:
    """A body as gunicorn leaves it after the head: ``buffered`` already read from the socket."""
    unreader = SocketUnreader(server)
    unreader.unread(buffered)
    return Body(LengthReader(unreader, length)), unreader


def read_all(reader: rawbody.BodyReader, size: int = 7) -> bytes:
    out = bytearray()
    buffer = memoryview(bytearray(size))
    while count := reader.readinto(buffer):
        out += buffer[:count]
    return bytes(out)


def test_the_buffered_part_then_the_socket_and_the_next_request_stays(pair: Pair) -> None:
    server, client = pair
    content = bytes(range(256)) * 40
    body, unreader = gunicorn_body(server, len(content), content[:100])
    client.sendall(content[100:] + NEXT_REQUEST)
    reader = rawbody.SocketBody(server, body, body.reader)
    assert body.failed  # until the whole body is in
    assert read_all(reader) == content
    assert not body.failed and body.read(10) == b""  # gunicorn sees the body consumed
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST  # the socket was not read past the body


def test_a_pipelined_request_in_the_read_ahead_goes_back(pair: Pair) -> None:
    server, _client = pair
    body, unreader = gunicorn_body(server, 5, b"hello" + NEXT_REQUEST)
    reader = rawbody.SocketBody(server, body, body.reader)
    assert read_all(reader) == b"hello" and not body.failed
    assert unreader.buf.getvalue() == NEXT_REQUEST


def test_what_gunicorns_body_already_took_comes_first(pair: Pair) -> None:
    server, client = pair
    # A 10-byte body whose first two bytes gunicorn's Body took from its reader earlier.
    body, unreader = gunicorn_body(server, 8, b"0123")
    body.buf.write(b"ab")
    client.sendall(b"4567" + NEXT_REQUEST)
    assert read_all(rawbody.SocketBody(server, body, body.reader)) == b"ab01234567"
    assert not body.failed and unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST


def test_a_reader_that_stops_early_leaves_the_connection_to_be_closed(pair: Pair) -> None:
    server, client = pair
    body, _ = gunicorn_body(server, 1000, b"")
    client.sendall(b"x" * 10)
    reader = rawbody.SocketBody(server, body, body.reader)
    assert rawbody.fill(reader, memoryview(bytearray(10))) == 10
    assert body.failed  # gunicorn then closes it instead of parsing the rest as a request


def test_a_short_body_ends_at_the_hang_up(pair: Pair) -> None:
    server, client = pair
    body, _ = gunicorn_body(server, 1000, b"")
    client.sendall(b"y" * 10)
    client.shutdown(socket.SHUT_WR)
    assert read_all(rawbody.SocketBody(server, body, body.reader)) == b"y" * 10
    assert body.failed


def test_other_bodies_are_read_from_the_stream() -> None:
    class Req:  # falcon's testing client gives a plain stream: no gunicorn socket
        def __init__(self) -> None:
            self.env = {"wsgi.input": io.BytesIO(b"abc")}
            self.bounded_stream = io.BytesIO(b"streamed")

    reader = rawbody.reader_for(Req())  # type: ignore[arg-type]
    assert isinstance(reader, rawbody.StreamBody)
    assert read_all(reader, 3) == b"streamed"
