"""The gunicorn worker of the API: gunicorn's threads, but no thread waits for a slow client.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first bytes arrive;
the thread then blocks until the whole request head is in. A client that sends one header
line every few seconds holds a thread that long, and 16 such clients (2 workers × 8 threads)
stalled the whole API: /healthz timed out. This worker reads the request head in the worker's
event loop instead (non-blocking, with a deadline and a size cap) and gives a thread only a
connection whose head is complete. Once in a thread, every read and write of the socket waits
at most ``read_timeout`` seconds for progress, so a client that stalls in the body, or stops
reading the response, frees its thread too.

Why threads and not gevent or an ASGI worker: the handlers block on SQL, pygit2 and git child
processes; gevent would monkey-patch all of that process-wide (psycopg, subprocess, the
SQLAlchemy pool), and an ASGI worker would need every resource rewritten as a coroutine. The
slow-client problem sits entirely in reading the request head, which is what this fixes
(measurements in docs/limits.md).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

# A request head larger than this is refused by closing (gunicorn's own limits,
# limit_request_line and limit_request_fields, are far below it).
MAX_HEAD_BYTES = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_RECV = 16 * 1024


class _Head:
    """A connection whose request head is still arriving."""

    __slots__ = ("conn", "data", "deadline")

    def __init__(self, conn: TConn, deadline: float) -> None:
        self.conn = conn
        self.data = bytearray()
        self.deadline = deadline


class _ReadTimeoutSocket(socket.socket):
    """A client socket whose blocking mode has a timeout: gthread makes the socket blocking
    (``setblocking(True)``, i.e. no timeout) before each request; here that means "wait at most
    ``read_timeout`` seconds for each read or write to make progress"."""

    read_timeout: float = 60.0

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(False)


class HeadFirstWorker(ThreadWorker):
    """``gthread`` with request heads read by the event loop (see the module docstring).
    Use :func:`worker_class` to get one with the configured timeouts."""

    header_timeout: float = 10.0
    read_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heads: deque[_Head] = deque()

    # --- new connections and kept-alive ones: wait for a whole head without a thread ----------

    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:
            # The head arrives inside TLS records, which only the thread's wrapped socket can
            # read: with gunicorn's own TLS, plain gthread behaviour (terminate TLS in front of
            # gitserver to keep the protection).
            super().accept(listener)
            return
        try:
            client, address = listener.accept()
        except OSError:
            return  # EAGAIN (another worker took it), ECONNABORTED (the client is gone)
        sock = _ReadTimeoutSocket(client.family, client.type, client.proto, fileno=client.detach())
        sock.read_timeout = self.read_timeout
        self.nr_conns += 1
        self._wait_for_head(TConn(self.cfg, sock, address, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        if self.cfg.is_ssl:
            super().on_client_socket_readable(conn, client)
        else:
            self._read_head_again(conn, client, self.keepalived_conns)

    def on_pending_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        if self.cfg.is_ssl:
            super().on_pending_socket_readable(conn, client)
        else:
            self._read_head_again(conn, client, self.pending_conns)

    def _read_head_again(self, conn: TConn, client: socket.socket, waiting: deque[TConn]) -> None:
        """A kept-alive (or pending) connection sent its next request: its head is read in the
        event loop again, not in a thread."""
        self.poller.unregister(client)
        waiting.remove(conn)
        self._wait_for_head(conn)

    def _wait_for_head(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        if conn.parser is not None and _HEAD_END in conn.parser.unreader.buf.getvalue():
            self._dispatch(conn, b"")  # a pipelined request is already buffered
            return
        head = _Head(conn, time.monotonic() + self.header_timeout)
        self.heads.append(head)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, head))

    def _on_head_readable(self, head: _Head, sock: socket.socket) -> None:
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(head)
            return
        head.data += data
        # The end marker may straddle two reads: look a little before the new data too.
        if _HEAD_END in head.data[-(len(data) + 3):]:
            self._forget(head)
            self._dispatch(head.conn, bytes(head.data))
        elif len(head.data) > MAX_HEAD_BYTES:
            self._drop(head)

    def _dispatch(self, conn: TConn, data: bytes) -> None:
        """Give a connection with a whole request head to a thread."""
        conn.data_ready = True  # gthread's own wait for the first bytes is not needed
        conn.sock.setblocking(True)
        conn.init()
        if data:
            conn.parser.unreader.unread(data)
        self.enqueue_req(conn)

    def _forget(self, head: _Head) -> None:
        self.poller.unregister(head.conn.sock)
        self.heads.remove(head)

    def _drop(self, head: _Head) -> None:
        self._forget(head)
        self.nr_conns -= 1
        head.conn.close()

    def murder_pending(self) -> None:
        """gthread's housekeeping, once a second: also close the connections whose request
        head did not arrive within the header timeout."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads and self.heads[0].deadline <= now:
            self._drop(self.heads[0])


def worker_class(header_timeout: float, read_timeout: float) -> type[HeadFirstWorker]:
    """The worker class for gunicorn's ``worker_class`` setting, with these timeouts."""
    return type("HeadFirstWorker", (HeadFirstWorker,),
                {"header_timeout": header_timeout, "read_timeout": read_timeout,
                 "__module__": __name__})
