"""The pure SSH LFS protocol (``git-lfs-transfer <repo> upload|download``), server side.

git-lfs's ``docs/proposals/ssh_adapter.md`` describes it; the client is git-lfs's ``ssh/`` and
``tq/ssh.go``, and charmbracelet's git-lfs-transfer is the Go server this follows. After a
capability advertisement (``version=1``, ``locking``) the client sends commands, each a
pkt-line section: ``version 1``, ``batch`` (arguments, delimiter, ``<oid> <size>`` lines),
``put-object <oid>`` (``size=`` argument, delimiter, the bytes), ``verify-object <oid>``,
``get-object <oid>``, ``lock``, ``list-lock``/``list-locks``, ``unlock <id>`` and ``quit``.
Every answer starts ``status <HTTP code>``; an error carries its message after a delimiter.

The session is authenticated by SSH before it starts, so no per-object tokens are issued. The
decisions are :class:`gitserver.lfs.service.LfsService`'s, run in threads (they use the
database); a bad command gets an error status and the session goes on, a broken framing (or
input ending inside a command) ends it with :class:`BrokenFraming`, a one-line refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gitserver.lfs import batch as batches
from gitserver.lfs import locks, oids, pktline
from gitserver.lfs.pktline import Packet, ReadExactly
from gitserver.lfs.service import LfsService, Target
from gitserver.lfs.store import CHUNK
from gitserver.lfs.tokens import DOWNLOAD, UPLOAD
from gitserver.policy.errors import Forbidden, GitserverError, InvalidInput

log = logging.getLogger(__name__)

CAPABILITIES = ("version=1", "locking")
VERSION = "1"
Write = Callable[[bytes], Awaitable[None]]
# get-object's data packets. git-lfs (github.com/git-lfs/pktline) reads each packet with
# io.ReadAll, which starts at 512 bytes and grows: a 65516-byte packet costs it ~290 KB of
# allocations, and the garbage collector then takes ~40 % of its CPU. At 511 bytes a packet
# fits the first allocation; the client spends ~0.5 s less CPU per 200 MiB (docs/lfs.md,
# "Throughput"), for 0.8 % more bytes on the wire.
DOWNLOAD_PACKET_DATA = 511
# Lines of one object's batch answer.
NOOP = "noop"
# The most text lines one section may have (a full batch and its arguments fit with room):
# the daemon serves every SSH user, so a client that never sends a flush must not fill it.
MAX_SECTION_LINES = 2 * batches.MAX_OBJECTS


class Answer:
    """A status with its arguments and either text lines or (get-object) a stream of bytes."""

    def __init__(self, status: int, args: list[str] | None = None, lines: list[str] | None = None) -> None:
        self.status, self.args, self.lines = status, args or [], lines

    def encode(self) -> bytes:
        out = [pktline.text(f"status {self.status:03d}"), *(pktline.text(a) for a in self.args)]
        if self.lines is not None:
            out.append(pktline.DELIM)
            out.extend(pktline.text(line) for line in self.lines)
        out.append(pktline.FLUSH)
        return b"".join(out)


def error(exc: GitserverError) -> Answer:
    return Answer(exc.status, lines=[" ".join(exc.message.split())])


class TransferSession:
    """One ``git-lfs-transfer`` channel: read commands until ``quit`` or the end of input."""

    def __init__(self, lfs: LfsService, target: Target, read: ReadExactly, write: Write,
                 can_write: bool) -> None:
        self.lfs, self.target, self.read, self.write = lfs, target, read, write
        self.can_write = can_write

    async def run(self) -> None:
        try:
            await self._commands()
        except pktline.ProtocolError as exc:
            # Hostile or broken input, not a bug: one line in the log, none of it a traceback.
            # The client hears why as a status (git-lfs shows it), then the session ends.
            log.warning("git-lfs-transfer on %s ended: %s", self.target.full_name, exc)
            with contextlib.suppress(Exception):  # the client may be gone; the refusal stands
                await self.write(Answer(400, lines=[str(exc)]).encode())
            raise BrokenFraming(f"git-lfs-transfer: {exc}; session ended") from None

    async def _commands(self) -> None:
        await self.write(b"".join(pktline.text(c) for c in CAPABILITIES) + pktline.FLUSH)
        try:
            while await self._next_command():
                pass
        except EOFError:
            return

    async def _next_command(self) -> bool:
        """Read and answer one command; False after ``quit``."""
        first = await pktline.read_packet(self.read)
        if first.kind != "data":
            await self.write(Answer(400, lines=["expected a command"]).encode())
            return True
        words = first.text.split(" ")
        if words[0] == "quit":
            await self._to_flush()
            await self.write(Answer(200).encode())
            return False
        await self.command(words)
        return True

    async def command(self, words: list[str]) -> None:
        name, rest = words[0], words[1:]
        handler = {"version": self.version, "batch": self.batch, "put-object": self.put_object,
                   "verify-object": self.verify_object, "get-object": self.get_object,
                   "lock": self.lock, "list-lock": self.list_locks, "list-locks": self.list_locks,
                   "unlock": self.unlock}.get(name)
        try:
            if handler is None:
                await self._to_flush()
                raise InvalidInput(f"unknown command {name[:40]!r}")
            answer = await handler(rest)
        except GitserverError as exc:
            answer = error(exc)
        except pktline.ProtocolError:
            raise  # the session cannot go on: run() ends it
        except Exception:
            log.exception("git-lfs-transfer command %s failed on %s", name, self.target.full_name)
            answer = Answer(500, lines=["internal error; the administrator can find it in the log"])
        if answer is not None:
            await self.write(answer.encode())

    # --- reading a command's sections --------------------------------------------------------

    async def _packet(self) -> pktline.Packet:
        """The next packet of a command: input may not end here."""
        try:
            return await pktline.read_packet(self.read)
        except EOFError:
            raise pktline.ProtocolError("the input ended inside a command") from None

    async def _section(self) -> tuple[list[str], bool]:
        """Text packets up to a delimiter (True) or a flush (False)."""
        lines: list[str] = []
        while True:
            packet = await self._packet()
            if packet.kind == "data":
                if len(lines) == MAX_SECTION_LINES:
                    raise pktline.ProtocolError(f"a section of more than {MAX_SECTION_LINES} lines")
                lines.append(packet.text)
            else:
                return lines, packet.kind == "delim"

    async def _to_flush(self) -> list[str]:
        lines, delim = await self._section()
        if delim:
            more, _ = await self._section()
            lines += more
        return lines

    async def _args_and_lines(self) -> tuple[dict[str, str], list[str]]:
        args, delim = await self._section()
        lines = (await self._section())[0] if delim else []
        return parse_args(args), lines

    # --- commands ----------------------------------------------------------------------------

    async def version(self, rest: list[str]) -> Answer:
        await self._to_flush()
        if rest != [VERSION]:
            return Answer(400, lines=["only version 1 is served"])
        return Answer(200)

    async def batch(self, rest: list[str]) -> Answer:
        args, lines = await self._args_and_lines()
        if args.get("hash-algo", oids.HASH_ALGO) != oids.HASH_ALGO:
            raise InvalidInput("hash-algo must be sha256")
        pointers = [parse_oid_line(line) for line in lines]
        if not pointers:
            return Answer(200, [f"hash-algo={oids.HASH_ALGO}"], [])
        if len(pointers) > batches.MAX_OBJECTS:
            raise InvalidInput(f"at most {batches.MAX_OBJECTS} objects per batch")
        request = batches.BatchRequest(self.target.operation, tuple(pointers), args.get("refname"))
        outcomes = await asyncio.to_thread(self._decide, request)
        return Answer(200, [f"hash-algo={oids.HASH_ALGO}"], [batch_line(o) for o in outcomes])

    def _decide(self, request: batches.BatchRequest) -> list[batches.Outcome]:
        lfs = self.lfs
        with lfs.transaction() as session:
            held = lfs.held(session, self.target.repo_id, (p.oid for p in request.objects))
            if request.operation == UPLOAD:
                lfs.check_quota(session, self.target, batches.upload_size(request, held))
                for pointer in request.objects:
                    why = lfs.size_refusal(pointer) if pointer.oid not in held else None
                    if why:
                        raise Refused413(why)
        return batches.decide(request, held, lambda p: {self.target.operation: SSH_ACTION}, lambda p: None)

    async def put_object(self, rest: list[str]) -> Answer:
        oid = oids.check_oid(rest[0] if rest else None)
        args, delim = await self._section()
        if not delim:
            raise InvalidInput("put-object needs its data after a delimiter")
        parsed = parse_args(args)
        size = oids.parse_size(parsed.get("size", ""), "size")
        try:
            self._require(UPLOAD)
            await asyncio.to_thread(self._check_room, oid, size)
            incoming = self.lfs.receive(oid, size)
        except GitserverError:
            await self._drain_data()
            raise
        try:
            await self._receive_data(incoming)
            await asyncio.to_thread(self.lfs.store_and_record, self.target, incoming)
        finally:
            incoming.discard()
        return Answer(200)

    def _check_room(self, oid: str, size: int) -> None:
        with self.lfs.transaction() as session:
            if not self.lfs.held(session, self.target.repo_id, [oid]):
                self.lfs.check_quota(session, self.target, size)

    async def _receive_data(self, incoming: Any) -> None:
        """Data packets to the flush into ``incoming``; a mismatch is raised only after the
        flush, so the session stays in step with the client."""
        failure: GitserverError | None = None
        while True:
            packet = await self._packet()
            if packet.kind != "data":
                break
            if failure is None:
                try:
                    incoming.write(packet.data)
                except GitserverError as exc:
                    failure = exc
        if failure is not None:
            raise failure

    async def _drain_data(self) -> None:
        while (await self._packet()).kind == "data":
            pass

    async def verify_object(self, rest: list[str]) -> Answer:
        oid = oids.check_oid(rest[0] if rest else None)
        args = parse_args(await self._to_flush())
        size = oids.parse_size(rest[1] if len(rest) > 1 else args.get("size", ""), "size")
        self._require(UPLOAD)

        def check() -> None:
            with self.lfs.transaction() as session:
                self.lfs.verify(session, self.target, oid, size)

        await asyncio.to_thread(check)
        return Answer(200)

    async def get_object(self, rest: list[str]) -> Answer | None:
        oid = oids.check_oid(rest[0] if rest else None)
        await self._to_flush()

        def opened() -> Any:
            with self.lfs.transaction() as session:
                return self.lfs.open_object(session, self.target, oid)

        stream, size = await asyncio.to_thread(opened)
        try:
            await self.write(pktline.text("status 200") + pktline.text(f"size={size}") + pktline.DELIM)
            while True:
                chunk = await asyncio.to_thread(stream.read, CHUNK)
                if not chunk:
                    break
                # One write per chunk read: a drain per packet would cost a wakeup each.
                await self.write(pktline.frame(chunk, DOWNLOAD_PACKET_DATA))
            await self.write(pktline.FLUSH)
        finally:
            stream.close()
        return None

    # --- locks -------------------------------------------------------------------------------

    async def lock(self, rest: list[str]) -> Answer:
        args = parse_args(await self._to_flush())
        self._require_write()

        def create() -> Answer:
            with self.lfs.transaction() as session:
                repo = self.lfs.repo_row(session, self.target)
                try:
                    made = locks.create(session, self.target.principal, repo, args.get("path", ""),
                                        args.get("refname"))
                except locks.LockExists as exc:
                    return Answer(409, lock_args(exc.lock), [exc.message])
                return Answer(201, lock_args(made))

        return await asyncio.to_thread(create)

    async def list_locks(self, rest: list[str]) -> Answer:
        args = parse_args(await self._to_flush())

        def listing() -> Answer:
            with self.lfs.transaction() as session:
                repo = self.lfs.repo_row(session, self.target)
                page = locks.listing(session, repo, path=args.get("path"), lock_id=args.get("id"),
                                     cursor=args.get("cursor"), limit=args.get("limit"))
                lines = [line for lk in page.locks for line in lock_spec(lk, self.target)]
            more = [f"next-cursor={page.next_cursor}"] if page.next_cursor else []
            return Answer(200, more, lines)

        return await asyncio.to_thread(listing)

    async def unlock(self, rest: list[str]) -> Answer:
        args = parse_args(await self._to_flush())
        self._require_write()
        lock_id = rest[0] if rest else ""

        def remove() -> Answer:
            with self.lfs.transaction() as session:
                repo = self.lfs.repo_row(session, self.target)
                gone = locks.unlock(session, self.target.principal, repo, lock_id, args.get("force") == "true")
                return Answer(200, lock_args(gone))

        return await asyncio.to_thread(remove)

    def _require(self, operation: str) -> None:
        if operation == UPLOAD and self.target.operation != UPLOAD:
            raise Forbidden("this git-lfs-transfer session is for download; objects are sent in an upload one")
        if not self.can_write:
            raise Forbidden(f"you have read access to {self.target.full_name}; this needs write")


    def _require_write(self) -> None:
        if not self.can_write:
            raise Forbidden(f"you have read access to {self.target.full_name}; this needs write")


class BrokenFraming(InvalidInput):
    """The client's pkt-lines are malformed: the session cannot be kept in step."""


class Refused413(GitserverError):
    status = 413
    code = "lfs_too_large"


SSH_ACTION = batches.Action("", {}, 0)


def batch_line(outcome: batches.Outcome) -> str:
    p = outcome.pointer
    if outcome.error is not None:
        return f"{p.oid} {p.size} {NOOP}"  # the client reports a missing download itself
    action = next(iter(outcome.actions), NOOP)
    return f"{p.oid} {p.size} {action}"


def parse_args(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def parse_oid_line(line: str) -> batches.Pointer:
    parts = line.split(" ")
    if len(parts) < 2:
        raise InvalidInput(f"a batch line is '<oid> <size>', got {line[:80]!r}")
    return batches.Pointer(oids.check_oid(parts[0]), oids.parse_size(parts[1]))


def _timestamp(lock: Any) -> str:
    return str(locks.lock_json(lock)["locked_at"])


def lock_args(lock: Any) -> list[str]:
    return [f"id={lock.id}", f"path={lock.path}", f"locked-at={_timestamp(lock)}", f"ownername={lock.owner_name}"]


def lock_spec(lock: Any, target: Target) -> list[str]:
    who = "ours" if locks.is_ours(lock, target.principal) else "theirs"
    return [f"lock {lock.id}", f"path {lock.id} {lock.path}", f"locked-at {lock.id} {_timestamp(lock)}",
            f"ownername {lock.id} {lock.owner_name}", f"owner {lock.id} {who}"]


__all__ = ["DOWNLOAD", "UPLOAD", "Packet", "TransferSession"]
