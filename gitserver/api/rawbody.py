"""A large request body read straight into the caller's buffer, without gunicorn's copies.

gunicorn's body reader (``wsgi.input``) returns a new ``bytes`` per read and passes every byte
through two ``BytesIO`` buffers on the way (its unreader's and its Body's), each a fresh
allocation and a copy: for a 200 MiB LFS upload that was most of the request thread's time
(docs/benchmarks.md). :func:`reader_for` gives ``readinto`` on the connection's own socket
instead (``recv_into`` a buffer the caller reuses), after first handing out what gunicorn had
already buffered with the request head.

Only a body of known length (``Content-Length``) under gunicorn is read that way; anything
else (chunked, another WSGI server, the tests' falcon client) gets the same interface over
``wsgi.input``. The socket keeps gunicorn's per-read timeout (gitserver.api.worker), and until
the whole body is in, gunicorn is told the body failed, so a reader that stops early gets its
connection closed instead of its leftover bytes parsed as the next request.
"""

from __future__ import annotations

import io
import socket
from typing import Any, Protocol

import falcon
from gunicorn.http.body import Body, LengthReader


class BodyReader(Protocol):
    def readinto(self, buffer: memoryview) -> int:
        """Fill the start of ``buffer``; the count of bytes, 0 at the end of the body."""


class SocketBody:
    """The rest of a ``Content-Length`` body from gunicorn: its read-ahead, then the socket."""

    def __init__(self, sock: socket.socket, body: Body, reader: LengthReader) -> None:
        self.sock, self.body = sock, body
        # Bytes gunicorn already holds: taken by its Body but not handed out yet, then its
        # unreader's read-ahead (the part that arrived with the head; past the body's end is
        # the next pipelined request, which goes back).
        held = body.buf.getvalue()
        body.buf = io.BytesIO()
        ahead = reader.unreader.buf.getvalue()
        reader.unreader.buf = io.BytesIO()
        mine = ahead[:reader.length]
        if len(ahead) > len(mine):
            reader.unreader.unread(ahead[len(mine):])
        self.pending = memoryview(held + mine)
        self.left = reader.length - len(mine)  # still on the socket
        reader.length = 0  # this reader owns the rest of the body now
        body.failed = self.left > 0  # until it is all read: see the module docstring

    def readinto(self, buffer: memoryview) -> int:
        if self.pending:
            count = min(len(buffer), len(self.pending))
            buffer[:count] = self.pending[:count]
            self.pending = self.pending[count:]
            return count
        if self.left == 0:
            return 0
        count = self.sock.recv_into(buffer, min(len(buffer), self.left))
        self.left -= count
        if self.left == 0:
            self.body.failed = False
        return count


class StreamBody:
    """Any other body: reads from the WSGI stream, copied into the buffer."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readinto(self, buffer: memoryview) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def reader_for(req: falcon.Request) -> BodyReader:
    """How to read ``req``'s body: from gunicorn's socket when it can be, else its stream."""
    sock, body = req.env.get("gunicorn.socket"), req.env.get("wsgi.input")
    if (isinstance(sock, socket.socket) and isinstance(body, Body)
            and isinstance(body.reader, LengthReader) and hasattr(body, "failed")
            and isinstance(getattr(body.reader.unreader, "buf", None), io.BytesIO)):
        return SocketBody(sock, body, body.reader)
    return StreamBody(req.bounded_stream)


def fill(reader: BodyReader, buffer: memoryview) -> int:
    """Read until ``buffer`` is full or the body ends; the count of bytes read."""
    filled = 0
    while filled < len(buffer):
        count = reader.readinto(buffer[filled:])
        if count == 0:
            break
        filled += count
    return filled
