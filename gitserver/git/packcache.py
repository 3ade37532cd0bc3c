"""The pack cache: identical fetches share one ``git pack-objects`` (docs/performance.md).

A build farm clones the same coordinates again and again; each clone would run its own
``pack-objects`` over the same objects. git lets a server run a command of its own instead
(``uploadpack.packObjectsHook``, read only from the command line or system config, never from a
repository's config, so a pushed repository cannot set it). gitserver's is this module, started
by the ``pack-objects`` hook script as ``python -S -m gitserver pack-objects-hook DIR MAX_BYTES
MAX_AGE git pack-objects ARGS…`` in the repository, with upload-pack's request on stdin.

The key of an entry is a digest of everything the pack depends on: the repository's path, the
arguments, the request (wants, haves, shallow lines) and, where ``--include-tag`` makes the pack
depend on the tags, the tags. Objects never change under an id and are never pruned (history
is never rewritten), so an entry holds exactly the objects ``pack-objects`` would send for that
request; the bytes are the ones its one ``pack-objects`` wrote. The hook script computes the
same key and serves whole, fresh packs itself (no Python for a hit); this module takes the rest.

Files of the entry for key K, in the cache directory:

- ``K.lock``: held with ``flock`` by the one process writing K; when it is done it writes
  ``done <inode> <size>`` into the file, or ``failed``;
- ``K.part``: the pack being written, by pack-objects itself (its output is this file); the
  writer and the readers that came while it is written follow it as it grows and stop where
  the writer said it ended;
- ``K.pack``: a whole pack (renamed from ``K.part`` after an fsync), served until it is older
  than the maximum age or evicted (oldest first) to keep the cache within its bound.

A writer killed mid-pack leaves a part file that no lock says is done: its readers fail their
fetch ("cut short; fetch again") rather than send a torn pack, and the next fetch writes the
entry anew. The counters are files that every process appends one byte to (``stats/hits``,
``stats/misses``): shared by every process without a server, and nothing is lost in a crash.
Standard library only: this runs for every fetch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from gitserver.config import Config

# Bump when the cache's format or key changes: entries of an older release are never served.
FORMAT = b"gitserver-pack-cache-2"
TAG_FORMAT = "%(objectname) %(refname)"
# The key the hook script computed (and served hits for) before it handed a miss over.
KEY_ENV = "GITSERVER_PACK_CACHE_KEY"
KEY_LENGTH, HEX = 64, frozenset("0123456789abcdef")
HITS, MISSES = "hits", "misses"
STATS_DIR = "stats"
CHUNK = 1024 * 1024
# How long a reader waits between looks at a pack that is still being written.
FOLLOW_POLL = 0.01
# A part file older than this whose lock nobody holds is a dead writer's leftover.
STALE_PART_SECONDS = 3600.0
INCLUDE_TAG = "--include-tag"
CUT_SHORT = ("error: gitserver: the pack this fetch shared with an identical one was cut short "
             "(its writer stopped); fetch again\n")


def hook_command(config: Config) -> str | None:
    """The value of ``uploadpack.packObjectsHook`` (git runs it with the shell, appending
    ``git pack-objects ARGS…``), or None when the cache is off."""
    import shlex

    from gitserver.git.store import PACK_OBJECTS_HOOK

    if config.pack_cache_max_bytes <= 0 or config.pack_cache_max_age <= 0:
        return None
    parts = (config.hooks_dir / PACK_OBJECTS_HOOK, config.effective_pack_cache_dir,
             config.pack_cache_max_bytes, f"{config.pack_cache_max_age:g}")
    return " ".join(shlex.quote(str(part)) for part in parts)


def request_key(repo: Path, args: list[str], request: bytes) -> str:
    """The entry's key. The ``pack-objects`` hook script computes the same digest itself, to
    serve hits without starting Python (tests/unit/test_packcache.py holds the two equal)."""
    digest = hashlib.sha256(FORMAT)
    for part in (str(repo.resolve()), *args):
        digest.update(b"\0" + part.encode())
    digest.update(b"\0\0" + request)
    if INCLUDE_TAG in args:
        digest.update(b"\0tags:" + _tags(repo))
    return digest.hexdigest()


def _given_key() -> str | None:
    """The hook script's key, when it is one (it names files: nothing but a digest will do)."""
    key = os.environ.get(KEY_ENV, "")
    return key if len(key) == KEY_LENGTH and all(c in HEX for c in key) else None


def _tags(repo: Path) -> bytes:
    """The tags as the hook script lists them: an ``--include-tag`` pack depends on them."""
    return subprocess.run(["git", "for-each-ref", f"--format={TAG_FORMAT}", "refs/tags"], cwd=repo,
                          capture_output=True, check=True).stdout


def count(cache_dir: Path, name: str) -> None:
    """Add one to a counter: one byte appended, atomic under O_APPEND."""
    stats = cache_dir / STATS_DIR
    with contextlib.suppress(OSError):
        stats.mkdir(parents=True, exist_ok=True)
        fd = os.open(stats / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)


def counter(cache_dir: Path, name: str) -> int:
    try:
        return (cache_dir / STATS_DIR / name).stat().st_size
    except OSError:
        return 0


def stored_bytes(cache_dir: Path) -> int:
    """The bytes of the whole packs the cache holds."""
    return sum(size for _path, size, _mtime in _entries(cache_dir))


class Entry:
    """The files of one key."""

    def __init__(self, cache_dir: Path, key: str) -> None:
        self.pack = cache_dir / f"{key}.pack"
        self.part = cache_dir / f"{key}.part"
        self.lock = cache_dir / f"{key}.lock"

    def fresh_pack(self, max_age: float) -> BinaryIO | None:
        """The whole pack, open, when there is one younger than ``max_age``."""
        try:
            fh = open(self.pack, "rb")  # noqa: SIM115  (returned to the caller)
        except OSError:  # none yet (or no usable cache directory)
            return None
        if time.time() - os.fstat(fh.fileno()).st_mtime > max_age:
            fh.close()
            return None
        return fh


def serve(cache_dir: Path, max_bytes: int, max_age: float, argv: list[str], request: bytes,
          out: BinaryIO) -> int:
    """Answer one pack-objects request from the cache or by running ``argv``; the exit code."""
    entry = Entry(cache_dir, _given_key() or request_key(Path.cwd(), argv[1:], request))
    if (pack := entry.fresh_pack(max_age)) is not None:
        count(cache_dir, HITS)
        return _send(pack, out)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(entry.lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # no cache today (a full or read-only disk): the fetch itself must not fail
        return subprocess.run(argv, input=request, stdout=out, check=False).returncode
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            count(cache_dir, HITS)  # joining the pack-objects already running
            return _follow(entry, lock_fd, max_age, out)
        # The lock is ours: a writer may have finished between the look above and now.
        if (pack := entry.fresh_pack(max_age)) is not None:
            count(cache_dir, HITS)
            return _send(pack, out)
        count(cache_dir, MISSES)
        code = _write(entry, lock_fd, argv, request, out, max_bytes)
    finally:
        os.close(lock_fd)  # releases the lock
    if code == 0:
        evict(cache_dir, max_bytes, max_age)  # the same process: no second interpreter
    return code


def _send(pack: BinaryIO, out: BinaryIO) -> int:
    with pack:
        out.flush()
        _send_range(pack.fileno(), out.fileno(), 0, os.fstat(pack.fileno()).st_size)
    return 0


def _write(entry: Entry, lock_fd: int, argv: list[str], request: bytes, out: BinaryIO,
           max_bytes: int) -> int:
    """Run pack-objects with its ``--stdout`` going straight into the part file, and send the
    file to ``out`` as it grows (``sendfile``): no pack byte passes through Python or one more
    pipe (docs/performance.md, "what a cold cache costs"). pack-objects killed or failing leaves
    a part file the lock calls failed: this fetch fails and so do the readers that joined."""
    os.ftruncate(lock_fd, 0)
    entry.part.unlink(missing_ok=True)
    fd = os.open(entry.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb", buffering=0) as part, open(entry.part, "rb") as source:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=part)
        assert proc.stdin is not None
        try:
            # pack-objects reads its whole request (ending in an empty line) before it writes.
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(request)
            proc.stdin.close()
            out.flush()
            sent = _stream_while(proc, source, out.fileno())
            code = proc.wait()
            if code != 0:
                _abandon(entry, lock_fd)
                return code
            size = os.fstat(part.fileno()).st_size
            if sent is not None:
                _send_range(source.fileno(), out.fileno(), sent, size)
            return _finish(entry, lock_fd, part.fileno(), size, max_bytes)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _stream_while(proc: subprocess.Popen[bytes], source: BinaryIO, out_fd: int) -> int | None:
    """Send what pack-objects has written so far, until it exits; the offset reached, or None
    once the client has gone (pack-objects goes on, for the readers that joined)."""
    offset = 0
    while True:
        running = proc.poll() is None
        size = os.fstat(source.fileno()).st_size
        try:
            offset = _send_range(source.fileno(), out_fd, offset, size)
        except BrokenPipeError:
            proc.wait()
            return None
        if not running:
            return offset
        time.sleep(FOLLOW_POLL)


def _send_range(in_fd: int, out_fd: int, offset: int, end: int) -> int:
    while offset < end:
        sent = os.sendfile(out_fd, in_fd, offset, end - offset)
        if sent == 0:
            break
        offset += sent
    return offset


def _finish(entry: Entry, lock_fd: int, part_fd: int, size: int, max_bytes: int) -> int:
    """Make the written part file the entry (or drop it: larger than the whole cache) and tell
    the readers where it ends."""
    os.fsync(part_fd)
    inode = os.fstat(part_fd).st_ino
    if size <= max_bytes:
        os.rename(entry.part, entry.pack)
    else:  # larger than the whole cache: served, not kept
        entry.part.unlink()
    os.pwrite(lock_fd, f"done {inode} {size}\n".encode(), 0)
    return 0


def _abandon(entry: Entry, lock_fd: int) -> None:
    entry.part.unlink(missing_ok=True)
    os.pwrite(lock_fd, b"failed\n", 0)


def _follow(entry: Entry, lock_fd: int, max_age: float, out: BinaryIO) -> int:
    """Stream the pack another process is writing, to the end that process says it has."""
    part = _open_part(entry, lock_fd)
    if part is None:  # the writer finished before its part file could be opened
        pack = entry.fresh_pack(max_age)
        if pack is None:
            sys.stderr.write(CUT_SHORT)
            return 1
        return _send(pack, out)
    with part:
        inode = os.fstat(part.fileno()).st_ino
        while True:
            while chunk := part.read(CHUNK):
                out.write(chunk)
            out.flush()
            state = _writer_state(lock_fd)
            if state is None:  # still being written
                time.sleep(FOLLOW_POLL)
                continue
            if state != ("done", inode):
                sys.stderr.write(CUT_SHORT)
                return 1
            while chunk := part.read(CHUNK):  # what was written after the last read
                out.write(chunk)
            out.flush()
            return 0


def _open_part(entry: Entry, lock_fd: int) -> BinaryIO | None:
    while True:
        try:
            return open(entry.part, "rb")
        except FileNotFoundError:
            if _writer_state(lock_fd) is not None:
                return None
            time.sleep(FOLLOW_POLL)


def _writer_state(lock_fd: int) -> tuple[str, int] | None:
    """None while the writer holds the lock; then what it wrote: ("done", inode) or ("failed", 0)."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    try:
        words = os.pread(lock_fd, 128, 0).decode("ascii", "replace").split()
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
    if len(words) == 3 and words[0] == "done" and words[1].isdigit():
        return ("done", int(words[1]))
    return ("failed", 0)


def evict(cache_dir: Path, max_bytes: int, max_age: float) -> None:
    """Remove packs past their age, then the oldest until the rest fit ``max_bytes``, and the
    leftovers of writers that died. One process at a time."""
    fd = os.open(cache_dir / "evict.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        now = time.time()
        entries = sorted(_entries(cache_dir), key=lambda e: e[2])
        total = sum(size for _p, size, _m in entries)
        for path, size, mtime in entries:
            if now - mtime > max_age or total > max_bytes:
                path.unlink(missing_ok=True)
                total -= size
        _sweep_dead_writers(cache_dir, now)
    finally:
        os.close(fd)


def _entries(cache_dir: Path) -> list[tuple[Path, int, float]]:
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(cache_dir) as it:
        for item in it:
            if item.name.endswith(".pack"):
                with contextlib.suppress(FileNotFoundError):
                    st = item.stat()
                    found.append((Path(item.path), st.st_size, st.st_mtime))
    return found


def _sweep_dead_writers(cache_dir: Path, now: float) -> None:
    for part in cache_dir.glob("*.part"):
        with contextlib.suppress(FileNotFoundError):
            if now - part.stat().st_mtime < STALE_PART_SECONDS:
                continue
            lock_fd = os.open(part.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                part.unlink()
            except BlockingIOError:
                pass
            finally:
                os.close(lock_fd)


def main(args: list[str]) -> int:
    """``gitserver pack-objects-hook DIR MAX_BYTES MAX_AGE git pack-objects ARGS…``."""
    if len(args) < 5 or args[3] != "git":
        sys.stderr.write("usage: gitserver pack-objects-hook DIR MAX_BYTES MAX_AGE git pack-objects ARGS...\n")
        return 2
    cache_dir, max_bytes, max_age = Path(args[0]), int(args[1]), float(args[2])
    request = sys.stdin.buffer.read()
    return serve(cache_dir, max_bytes, max_age, args[3:], request, sys.stdout.buffer)
