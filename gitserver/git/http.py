"""Read-only smart HTTP for git: the protocol pieces and the ``git upload-pack`` child.

Pure parts (repository names from a URL, the ``service`` query parameter, the ``Git-Protocol``
header, pkt-lines, request-body decoding with a size bound) are plain functions and classes,
table-tested without sockets. :class:`UploadPackProcess` runs one ``git upload-pack
--stateless-rpc`` for one HTTP request from threads, because the WSGI server hands us a
blocking request stream and wants a blocking iterable back:

- a feeder thread copies the (decoded, bounded) request body into git's stdin while git's
  stdout is read, so neither side can fill a pipe and wait on the other;
- the response is an iterable that reads git's stdout in chunks as the client takes them
  (nothing is buffered beyond one chunk: a clone of any size streams);
- its ``close()`` (which the WSGI server calls when the response ends or the client goes away)
  kills git's whole process group, like the SSH session does.

The HTTP resources that drive this live in :mod:`gitserver.api.smart_http`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Protocol

from gitserver.git.store import RECEIVE_PACK, UPLOAD_PACK, git_argv, git_env
from gitserver.policy.errors import GitserverError, InvalidInput, PayloadTooLarge
from gitserver.policy.names import GIT_SUFFIX, name_problem
from gitserver.process.children import popen_wait, stop_group

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# The names git's HTTP client uses for the two services, in the query string and the URL.
SERVICE_PREFIX = "git-"
UPLOAD_PACK_SERVICE = SERVICE_PREFIX + UPLOAD_PACK
RECEIVE_PACK_SERVICE = SERVICE_PREFIX + RECEIVE_PACK
# Content types of the smart HTTP protocol (gitprotocol-http(5)).
ADVERTISEMENT_TYPE = f"application/x-{UPLOAD_PACK_SERVICE}-advertisement"
REQUEST_TYPE = f"application/x-{UPLOAD_PACK_SERVICE}-request"
RESULT_TYPE = f"application/x-{UPLOAD_PACK_SERVICE}-result"
FLUSH_PKT = b"0000"
PKT_MAX_PAYLOAD = 65516  # 65520 minus the four length digits
# Request-body encodings git's HTTP client sends: it gzips larger negotiation requests.
GZIP_ENCODINGS = ("gzip", "x-gzip")
IDENTITY_ENCODINGS = ("", "identity")
# GIT_PROTOCOL is handed to git verbatim, so only what git's HTTP client actually sends
# ("Git-Protocol: version=2", or version=1) gets through; anything else is dropped and git
# speaks protocol v0, which every client understands.
_GIT_PROTOCOL_RE = re.compile(r"version=[012]")
# Settings added for HTTP only. Partial clones (--filter=blob:none) fetch missing blobs later by
# id; uploadpack.allowReachableSHA1InWant (a protected setting, on every command line) lets a
# protocol v0 request name any object reachable from a ref, which is all they need, so
# allowAnySHA1InWant stays off (gitserver.git.store.UPLOAD_PACK_CONFIG): it would also serve
# objects no ref reaches, such as those of a push refused after its quarantine (docs/http-clone.md,
# "What a reader can fetch"). uploadpack.allowFilter is also in the protected settings;
# repeated here so that this module states everything partial clones need.
HTTP_UPLOAD_PACK_CONFIG = {
    "uploadpack.allowFilter": "true",
}
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of git's process group
STDERR_TAIL = 2000  # characters of git's stderr kept for the log


class UnsupportedMediaType(GitserverError):
    """A request body in a content type or encoding upload-pack cannot take."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported Media Type"


# --- pure protocol helpers ---------------------------------------------------------------------

def repo_names(tenant: str, repo: str) -> tuple[str, str]:
    """The tenant and repository names a ``/git/<tenant>/<repo>[.git]/…`` URL names.

    One trailing ``.git`` is accepted (stored names never end in it). Every other problem is an
    :class:`InvalidInput` naming the segment; the names then pass the same allow-list as
    everywhere else, so ``..``, slashes, absolute paths and control characters never reach
    the filesystem.
    """
    if repo.endswith(GIT_SUFFIX):
        repo = repo[: -len(GIT_SUFFIX)]
    for what, name in (("tenant", tenant), ("repository", repo)):
        problem = name_problem(name)
        if problem:
            raise InvalidInput(f"invalid {what} name in the URL: {problem}", field=what)
    return tenant, repo


def service_from_query(value: str | None) -> str:
    """The git service (``upload-pack`` / ``receive-pack``) of ``info/refs?service=…``.

    Only the smart protocol is served: a missing parameter (a dumb-HTTP client) and any other
    service name are refused, naming what was sent when it is short and printable.
    """
    if value is None or value == "":
        raise InvalidInput("only the smart HTTP protocol is served: "
                           f"add ?service={UPLOAD_PACK_SERVICE}", field="service")
    if value == UPLOAD_PACK_SERVICE:
        return UPLOAD_PACK
    if value == RECEIVE_PACK_SERVICE:
        return RECEIVE_PACK
    shown = repr(value) if len(value) <= 60 and value.isascii() and value.isprintable() else "value"
    raise InvalidInput(f"unsupported service {shown}; this server offers {UPLOAD_PACK_SERVICE} "
                       "(read-only)", field="service")


def git_protocol(header: str | None) -> str | None:
    """The ``GIT_PROTOCOL`` value for a ``Git-Protocol`` request header, or None to drop it."""
    if header is None:
        return None
    value = header.strip()
    return value if _GIT_PROTOCOL_RE.fullmatch(value) else None


def pkt_line(payload: bytes) -> bytes:
    """One pkt-line: four hex digits of total length, then the payload."""
    if len(payload) > PKT_MAX_PAYLOAD:
        raise ValueError("pkt-line payload too long")
    return f"{len(payload) + 4:04x}".encode("ascii") + payload


def advertisement_prefix(service: str, protocol: str | None) -> bytes:
    """What precedes git's ref advertisement on ``info/refs``.

    Protocols v0 and v1 over HTTP start with ``# service=git-upload-pack`` and a flush, which
    the client checks; v2 starts directly with git's capability advertisement (as
    git-http-backend does).
    """
    if protocol == "version=2":
        return b""
    return pkt_line(f"# service={SERVICE_PREFIX}{service}\n".encode("ascii")) + FLUSH_PKT


def upload_pack_argv(repo_path: Path, hooks_dir: Path, *, advertise: bool, pack_cache: str | None = None) -> list[str]:
    """``git -c … upload-pack --strict --stateless-rpc [--advertise-refs] <repo>``.

    The protected settings come from :func:`gitserver.git.store.git_argv`; the HTTP-only ones
    are put before them (git applies ``-c`` in order, so the protected ones keep the last
    word). ``--strict`` makes git use exactly the resolved path, never ``<path>.git``.
    """
    extra = ["--strict", "--stateless-rpc"] + (["--advertise-refs"] if advertise else [])
    argv = git_argv(UPLOAD_PACK, repo_path, hooks_dir, *extra, pack_cache=pack_cache)
    http_config = [arg for key, value in HTTP_UPLOAD_PACK_CONFIG.items()
                   for arg in ("-c", f"{key}={value}")]
    return [argv[0], *http_config, *argv[1:]]


def upload_pack_env(protocol: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's minimal environment, plus GIT_PROTOCOL when the client asked for v1 or v2."""
    extra = {"GIT_PROTOCOL": protocol} if protocol else {}
    return git_env(base, **extra)


# --- request bodies ----------------------------------------------------------------------------

def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload-pack request is larger than this server's limit of "
                           f"{limit} bytes (setting http_git_max_request_bytes)")


class Readable(Protocol):
    """A blocking byte stream: a WSGI request's ``wsgi.input``, or a file."""

    def read(self, size: int, /) -> bytes: ...


class RequestBody:
    """The request body as git must see it: read in chunks, gunzipped, and bounded.

    ``limit`` applies to the bytes read and to the bytes decoded, so a small gzip bomb is
    refused as surely as a large body. Upload-pack requests are negotiation only (wants,
    haves, filters), far below any sane limit; the pack goes the other way.
    """

    def __init__(self, stream: Readable, *, content_length: int | None,
                 content_encoding: str | None, limit: int) -> None:
        encoding = (content_encoding or "").strip().lower()
        if encoding in GZIP_ENCODINGS:
            # wbits 16 + MAX_WBITS: a gzip header and trailer, nothing else.
            self._inflater: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding in IDENTITY_ENCODINGS:
            self._inflater = None
        else:
            shown = repr(encoding) if len(encoding) <= 40 and encoding.isprintable() else "value"
            raise UnsupportedMediaType(f"unsupported Content-Encoding {shown}; "
                                       "send the body plain or gzip-compressed")
        if content_length is not None and content_length > limit:
            raise too_large(limit)
        self._stream = stream
        self._length = content_length
        self._limit = limit
        self._decoded = 0

    def chunks(self) -> Iterator[bytes]:
        """The decoded body, chunk by chunk; raises :class:`GitserverError` when it is bad."""
        remaining = self._length
        read = 0
        while remaining is None or remaining > 0:
            data = self._stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not data:
                if remaining:
                    raise InvalidInput("the request body ended before its Content-Length")
                break
            read += len(data)
            if read > self._limit:
                raise too_large(self._limit)
            if remaining is not None:
                remaining -= len(data)
            yield from self._decode(data)
        if self._inflater is not None and not self._inflater.eof:
            raise InvalidInput("the gzip request body is truncated")

    def _decode(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            yield data
            return
        if self._inflater.eof:
            raise InvalidInput("data after the end of the gzip request body")
        try:
            # max_length bounds what one call may allocate; the rest waits in unconsumed_tail.
            out = self._inflater.decompress(data, CHUNK)
            while True:
                self._decoded += len(out)
                if self._decoded > self._limit:
                    raise too_large(self._limit)
                if out:
                    yield out
                if self._inflater.unused_data:
                    raise InvalidInput("data after the end of the gzip request body")
                if not self._inflater.unconsumed_tail:
                    return
                out = self._inflater.decompress(self._inflater.unconsumed_tail, CHUNK)
        except zlib.error as exc:
            raise InvalidInput("the request body is not valid gzip data") from exc


# --- the child process -------------------------------------------------------------------------

class TransferObserver(Protocol):
    """Where a transfer reports what it does (metrics in the server, a fake in tests)."""

    def started(self) -> None: ...

    def finished(self) -> None: ...

    def transferred(self, direction: str, n: int) -> None:
        """``direction`` is ``sent`` (to the client) or ``received`` (from it)."""


class UploadFailed(GitserverError):
    """git upload-pack stopped without answering: the request was not one it accepts."""

    status = 400
    code = "upload_pack_failed"
    title = "Bad Request"


class UploadPackProcess:
    """One ``git upload-pack --stateless-rpc`` child and its two pumps (see the module doc)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path,
                 observer: TransferObserver, *, what: str) -> None:
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self.observer = observer
        self.what = what  # for log lines: "tenant/repo (fetch)"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._feeder: threading.Thread | None = None
        self._feed_error: GitserverError | None = None
        self._wake: tuple[int, int] | None = None
        self._closed = False
        self._killed = False
        self._answered = False  # git's output reached its end: the whole answer was read
        self._lock = threading.Lock()

    def start(self, body: RequestBody | None) -> None:
        """Spawn git in its own process group; with ``body``, start feeding its stdin."""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
        try:
            self.proc = subprocess.Popen(  # argument list, never a shell
                self.argv, stdin=subprocess.PIPE if body is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=self._stderr, env=self.env, cwd=str(self.cwd),
                bufsize=0, start_new_session=True)
        except BaseException:
            self._stderr.close()
            raise
        self.observer.started()
        if body is not None:
            self._wake = os.pipe()
            self._feeder = threading.Thread(target=self._feed, args=(body,),
                                             name="upload-pack-feeder", daemon=True)
            self._feeder.start()

    def _feed(self, body: RequestBody) -> None:
        """Request body → git's stdin; on a bad body, remember why and stop git."""
        proc = self.proc
        assert proc is not None and proc.stdin is not None and self._wake is not None
        fd = proc.stdin.fileno()
        try:
            for chunk in body.chunks():
                _write_all(fd, chunk)
                self.observer.transferred("received", len(chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # git answered and exited without reading everything; it needs no more
        except GitserverError as exc:
            self._feed_error = exc
            self._terminate()
        except Exception as exc:  # noqa: BLE001  (the client's stream failed: a broken request)
            log.info("reading the request body for %s failed: %s", self.what, exc)
            self._feed_error = InvalidInput("the request body could not be read")
            self._terminate()
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            # The feeder owns the write end of the wake pipe, close() the read end: whoever
            # finishes first, nothing is written to a reused descriptor.
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b".")
            os.close(self._wake[1])

    def first_chunk(self) -> bytes:
        """Wait for git's first bytes; raise the body's error or :class:`UploadFailed` instead.

        Nothing is sent to the client before this returns, so a body over the limit is still
        answered with a clean 413. git only answers once it has read a whole request, so for
        any real client the body is complete by then.
        """
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        out = proc.stdout.fileno()
        # poll, not select: a busy server's descriptors can be numbered past FD_SETSIZE.
        poller = select.poll()
        poller.register(out, select.POLLIN)
        if self._wake is not None:
            poller.register(self._wake[0], select.POLLIN)
        while True:
            readable = {fd for fd, _event in poller.poll()}
            if self._wake is not None and self._wake[0] in readable:
                poller.unregister(self._wake[0])
                if self._feed_error is not None:
                    raise self._feed_error
                if out not in readable:
                    continue
            data = os.read(out, CHUNK)
            if data:
                self.observer.transferred("sent", len(data))
                return data
            if self._feed_error is not None:  # the feeder stopped git (set before the kill)
                raise self._feed_error
            returncode = proc.wait()
            log.warning("git upload-pack for %s exited %s without answering: %s", self.what,
                        returncode, self.stderr_tail())
            raise UploadFailed("git upload-pack could not answer this request")

    def read(self) -> bytes:
        """The next chunk of git's output; b"" at its end."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        data = os.read(proc.stdout.fileno(), CHUNK)
        if data:
            self.observer.transferred("sent", len(data))
        else:
            self._answered = True
        return data

    def stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def _terminate(self) -> None:
        """Stop git's whole process group (git and its pack-objects): TERM, then KILL."""
        proc = self.proc
        if proc is None:
            return
        with self._lock:
            if proc.poll() is not None:
                return  # reaped: its pid may belong to someone else by now
            self._killed = True
            stop_group(proc.pid, popen_wait(proc), KILL_GRACE)

    def close(self) -> None:
        """End the transfer however it went: stop git if it still runs, reap it, free fds.

        Idempotent; called by the WSGI server at the end of the response and when the client
        disconnects mid-stream, and by the resource when it fails before responding.
        """
        if self._closed:
            return
        self._closed = True
        proc = self.proc
        if proc is None:
            return
        if self._answered:
            # git closed its output after a whole answer and is exiting by itself: let it,
            # rather than stop it and log a finished clone as a client that went away.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_GRACE)
        self._terminate()
        returncode = proc.wait()
        if self._feeder is not None:
            # The feeder ends once git's stdin is gone; it may still be inside one read of a
            # slow client's body, which the server's own timeouts bound.
            self._feeder.join(KILL_GRACE)
        if returncode != 0 and not self._killed:
            log.warning("git upload-pack for %s exited %s: %s", self.what, returncode,
                        self.stderr_tail())
        elif self._killed:
            log.info("stopped git upload-pack for %s (client gone or request refused)", self.what)
        for stream in (proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._wake is not None:
            os.close(self._wake[0])
        self.observer.finished()


class StreamingResponse:
    """The WSGI response iterable: ``prefix`` and git's output, chunk by chunk.

    A class rather than a generator so that ``close()`` stops git even when the server closes
    the response before iterating it (a generator's ``finally`` would never run then).
    """

    def __init__(self, child: UploadPackProcess, first: bytes) -> None:
        self.child = child
        self._pending: bytes | None = first

    def __iter__(self) -> StreamingResponse:
        return self

    def __next__(self) -> bytes:
        if self._pending is not None:
            data, self._pending = self._pending, None
            return data
        data = self.child.read()
        if not data:
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        self.child.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
