"""The LFS object store: content-addressed by SHA-256, written whole or not at all, never deleted.

Objects live under ``<data>/lfs/objects/ab/cd/<oid>`` (the first two byte pairs of the id
spread them over directories), or in S3-compatible object storage
(gitserver.lfs.s3, ``GITSERVER_LFS_STORE=s3://bucket/prefix``). Either way an upload is
received into a temporary file on local disk while its digest and size are computed, and
becomes an object only once both match what the client announced: a renamed file, or one
PUT to the bucket. A mismatch, a short body or a hang-up leaves nothing behind.

There is no delete: like history, an object once stored stays (docs/lfs.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from gitserver.policy.errors import InvalidInput

log = logging.getLogger(__name__)
_FADVISE = getattr(os, "posix_fadvise", None)  # Linux and most Unixes; not macOS

S3_SCHEME = "s3://"
# Bytes read or written at a time: large enough that a 200 MiB object is a few hundred
# system calls, small enough to keep many transfers in memory at once.
CHUNK = 1024 * 1024
# An upload's disk writes are started every this many bytes, while it still arrives: the fsync
# before the rename then waits for the last few MiB, not for the whole object (a 200 MiB
# upload spent a third of its time in that fsync).
WRITEBACK_BYTES = 8 * 1024 * 1024


class ObjectMismatch(InvalidInput):
    """The bytes received are not the object announced (digest or size): nothing was kept."""

    status = 422
    code = "lfs_object_mismatch"
    title = "Unprocessable Entity"


def object_key(oid: str) -> str:
    """``ab/cd/abcd…``: where an object lives below the store's root or prefix."""
    return f"{oid[0:2]}/{oid[2:4]}/{oid}"


class Incoming:
    """One upload in progress: bytes go to a temporary file while SHA-256 and the size are
    counted; :meth:`finish` checks both and hands the file to the store."""

    def __init__(self, oid: str, size: int, tmp_dir: Path) -> None:
        self.oid, self.size = oid, size
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{oid[:16]}.", suffix=".part", dir=tmp_dir)
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.received = 0
        self._written_back = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.received += len(data)
        if self.received > self.size:
            raise ObjectMismatch(f"object {self.oid}: more than the announced {self.size} bytes "
                                 "were sent; nothing was stored")
        self._digest.update(data)
        self._file.write(data)
        if self.received - self._written_back >= WRITEBACK_BYTES:
            self._write_back()

    def _write_back(self) -> None:
        """Start writing what came so far to disk, without waiting: Linux starts the writeback
        of a range on ``POSIX_FADV_DONTNEED`` (the pages, dirty at that moment, stay cached)."""
        self._file.flush()
        if _FADVISE is not None:
            _FADVISE(self._file.fileno(), self._written_back, self.received - self._written_back,
                     os.POSIX_FADV_DONTNEED)
        self._written_back = self.received

    def verified(self) -> Path:
        """The complete file, flushed to disk; ObjectMismatch unless size and digest match."""
        if self.received != self.size:
            raise ObjectMismatch(f"object {self.oid}: {self.received} bytes were sent, "
                                 f"{self.size} announced; nothing was stored")
        if self._digest.hexdigest() != self.oid:
            raise ObjectMismatch(f"object {self.oid}: the content's SHA-256 is "
                                 f"{self._digest.hexdigest()}; nothing was stored")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self.path

    def discard(self) -> None:
        """Drop the temporary file (always safe: after a rename it is already gone)."""
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ObjectStore(Protocol):
    """Where objects are kept. Every method takes an id already checked by gitserver.lfs.oids."""

    def exists(self, oid: str) -> bool: ...

    def receive(self, oid: str, size: int) -> Incoming: ...

    def finish(self, incoming: Incoming) -> None:
        """Store the upload if it verifies (ObjectMismatch otherwise); the temporary file is
        gone afterwards either way."""

    def open(self, oid: str) -> BinaryIO:
        """The object's bytes (FileNotFoundError when the store lacks it)."""

    def download_href(self, oid: str, expires_in: int) -> str | None:
        """A URL the client may fetch the object from directly (S3 presigned), or None."""


class LocalStore:
    """Objects as files under one directory (``<data>/lfs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def path(self, oid: str) -> Path:
        return self.objects / object_key(oid)

    def exists(self, oid: str) -> bool:
        return self.path(oid).is_file()

    def receive(self, oid: str, size: int) -> Incoming:
        return Incoming(oid, size, self.tmp)

    def finish(self, incoming: Incoming) -> None:
        try:
            source = incoming.verified()
            target = self.path(incoming.oid)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same content by definition when the object already exists: replacing it is
            # harmless, and rename is atomic, so a reader sees the old file or the new one.
            os.replace(source, target)
            _fsync_dir(target.parent)
        finally:
            incoming.discard()

    def open(self, oid: str) -> BinaryIO:
        return open(self.path(oid), "rb")

    def download_href(self, oid: str, expires_in: int) -> str | None:
        return None


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (as git does for its objects)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
