"""The asyncssh side of a self-service command: parse, run the work in a thread, print.

Only adapts: :mod:`.parse` decides what was asked, :mod:`.service` does it (in a worker
thread, like every database call of the daemon: the event loop serves every other
connection meanwhile), :mod:`.render` writes it. Every failure is one ``error: …`` line on
stderr and exit status 1 (git's refusals keep their ``ERROR:`` and 128).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from gitserver.config import Config
from gitserver.db.session import transaction
from gitserver.policy import access
from gitserver.policy.errors import (
    DATABASE_UNREACHABLE_MESSAGE,
    GitserverError,
    InvalidInput,
    Unavailable,
    is_database_unreachable,
)
from gitserver.runtime import Runtime
from gitserver.ssh.selfservice.parse import SelfServiceCommand, parse
from gitserver.ssh.selfservice.render import render
from gitserver.ssh.selfservice.service import MAX_KEY_BYTES, LogPiece, Result, read_log, run

log = logging.getLogger(__name__)

FAILED_STATUS = 1
GONE_STATUS = 255  # the client hung up: nobody reads it, but the channel wants one
# How long keys add waits for the key on stdin: a forgotten "< key.pub" should not hold a
# channel and a worker thread's worth of nothing forever.
STDIN_TIMEOUT = 60.0
# How often log -f asks the database for more (the API's followers poll the same way).
FOLLOW_INTERVAL = 0.5
LOG_PIECE = 1 << 20
_DEFAULT_SSH_PORT = 22


def help_hint(config: Config) -> str:
    """The line after the greeting of a bare ``ssh git@host``: how to list the commands."""
    url = urlsplit(config.ssh_base_url)
    host = url.hostname or "host"
    port = "" if url.port in (None, _DEFAULT_SSH_PORT) else f"-p {url.port} "
    user = url.username or "git"
    return f"Run 'ssh {port}{user}@{host} help' for the commands you can use here."


class SelfService:
    """Serves the self-service commands of one daemon."""

    def __init__(self, runtime: Runtime, follow_interval: float = FOLLOW_INTERVAL) -> None:
        self.runtime = runtime
        self.follow_interval = follow_interval

    async def serve(self, process: asyncssh.SSHServerProcess, principal: access.Principal) -> int:
        """Run the process's command; its exit status."""
        try:
            command = parse(process.command or "")
            if command.verb == "log":
                return await self._log(process, principal, command)
            stdin = await _read_stdin(process) if command.verb == "keys add" else ""
            result = await asyncio.to_thread(self._run, principal, command, stdin)
            await _write(process.stdout, render(command, result).encode())
            return 0
        except asyncio.CancelledError:
            raise
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            log.info("client went away during %s", process.command)
            return GONE_STATUS
        except GitserverError as exc:
            return fail(process, exc.message)
        except Exception as exc:
            if is_database_unreachable(exc):  # an outage, not a bug: say so, no traceback
                log.warning("self-service command failed: database unreachable")
                return fail(process, DATABASE_UNREACHABLE_MESSAGE)
            log.exception("self-service command failed")  # once here; the client gets one line
            return fail(process, "internal error; the administrator can find it in the log")

    def _run(self, principal: access.Principal, command: SelfServiceCommand, stdin: str) -> Result:
        with transaction(self.runtime.sessions) as session:
            return run(session, self.runtime, principal, command, stdin)

    def _read_log(self, principal: access.Principal, pipeline_id: int, offset: int) -> LogPiece:
        with transaction(self.runtime.sessions) as session:
            return read_log(session, principal, pipeline_id, offset, LOG_PIECE)

    async def _log(self, process: asyncssh.SSHServerProcess, principal: access.Principal,
                   command: SelfServiceCommand) -> int:
        """Print the log; with ``-f`` keep printing what is added until the pipeline ends
        (or the client hangs up)."""
        closed = asyncio.ensure_future(process.channel.wait_closed())
        offset = 0
        settled = False
        try:
            while True:
                piece = await asyncio.to_thread(self._read_log, principal, command.number, offset)
                if piece.data:
                    await _write(process.stdout, piece.data)
                    offset = piece.offset
                    continue
                if not command.follow or settled:
                    return 0
                # The worker writes its last line ("*** pipeline succeeded") just after the
                # final status: once final, read once more, an interval later, then stop.
                settled = piece.final
                done, _ = await asyncio.wait({closed}, timeout=self.follow_interval)
                if done:
                    return 0
        finally:
            closed.cancel()


async def _read_stdin(process: asyncssh.SSHServerProcess) -> str:
    """All of stdin (at most one key line's worth), as text."""
    data = b""
    try:
        async with asyncio.timeout(STDIN_TIMEOUT):
            while chunk := await process.stdin.read(MAX_KEY_BYTES + 1):
                data += chunk
                if len(data) > MAX_KEY_BYTES:
                    raise InvalidInput(f"stdin holds more than one key line ({MAX_KEY_BYTES} "
                                       "bytes at most)")
    except TimeoutError:
        raise Unavailable(f"no key arrived on stdin within {STDIN_TIMEOUT:g} s; "
                          "pipe it in: keys add < ~/.ssh/id_ed25519.pub") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidInput("stdin is not UTF-8 text (a public key line is ASCII)") from None


async def _write(stream: Any, data: bytes) -> None:
    stream.write(data)
    await stream.drain()


def fail(process: asyncssh.SSHServerProcess, message: str) -> int:
    """One ``error:`` line on stderr; the exit status of a failed self-service command."""
    line = " ".join(message.split())  # never more than one line
    with contextlib.suppress(Exception):
        process.stderr.write(f"error: {line}\n".encode("utf-8", "replace"))
    return FAILED_STATUS
