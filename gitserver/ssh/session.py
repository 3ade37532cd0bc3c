"""One SSH exec request: run git as a child, pump the channel, record an accepted push.

git never sees a shell: the argument list comes from :func:`gitserver.git.store.git_argv`, the
environment from :func:`git_env` plus the pusher's identity (the hooks read it). The child gets
its own process group (``start_new_session``) so that a vanished client takes upload-pack and
pack-objects down with it. A receive-pack is never killed for a hang-up: it may be recording
the push (see :meth:`GitChild._let_receive_pack_finish`). Any other git is stopped, and its
channel closed, once the channel has been silent for ``ssh_channel_idle_timeout``
(gitserver.ssh.silence).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncssh

from gitserver.config import Config
from gitserver.git import packcache
from gitserver.git.store import RECEIVE_PACK, git_argv, git_env
from gitserver.observe import metrics
from gitserver.policy import access
from gitserver.process.children import signal_group
from gitserver.push import launcher, limits, report
from gitserver.push.hookenv import ENV_CONFIG
from gitserver.push.ledger import PushContext
from gitserver.runtime import Runtime
from gitserver.ssh.commands import GitCommand
from gitserver.ssh.identity import Authorised
from gitserver.ssh.silence import Traffic, until_silent

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# git → client: one read takes what asyncio's pipe transport read at once (256 KiB at most),
# from a pipe grown to PIPE_SIZE, so a clone costs a few thousand loop iterations per GB
# instead of one per 64 KiB (docs/performance.md).
OUT_CHUNK = 256 * 1024
PIPE_SIZE = 1024 * 1024
GIT_PROTOCOL = "GIT_PROTOCOL"
# What git clients put in GIT_PROTOCOL ("version=2", "version=2:object-format=sha1"); anything
# else is dropped rather than handed to git.
_GIT_PROTOCOL_RE = re.compile(r"[A-Za-z0-9=:._-]{1,200}")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the child's process group
# The exit status of a channel closed for silence: that of every refusal (gitserver.ssh.server).
SILENT_STATUS = 128
CHANNEL_IDLE_SETTING = "GITSERVER_SSH_CHANNEL_IDLE_TIMEOUT"
PUSH_PROTOCOL = "ssh"  # the protocol a push over SSH is recorded with


def client_git_protocol(env: Mapping[Any, Any]) -> str | None:
    """The client's GIT_PROTOCOL, when it sent a well-formed one; every other variable is
    ignored (asyncssh hands keys and values over as str or bytes depending on the version)."""
    for key, value in env.items():
        name = key.decode("ascii", "replace") if isinstance(key, bytes) else str(key)
        if name != GIT_PROTOCOL:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        if _GIT_PROTOCOL_RE.fullmatch(text):
            return text
    return None


def child_env(config: Config, principal: access.Principal, target: Authorised, *,
              client_address: str, git_protocol: str | None,
              base: Mapping[str, str] | None = None,
              push_limits: limits.PushLimits = limits.NO_LIMITS) -> dict[str, str]:
    """The environment of the git child: minimal, plus what the hooks need to know."""
    base = os.environ if base is None else base
    extra = launcher.hook_env(config, push_context(principal, target, client_address),
                              f"{target.tenant}/{target.repo}", target.permission, user=principal.user_name,
                              push_limits=push_limits, config_file=base.get(ENV_CONFIG, "")).to_env()
    if git_protocol:
        extra[GIT_PROTOCOL] = git_protocol
    return git_env(base, **extra)


def push_context(principal: access.Principal, target: Authorised, client_address: str) -> PushContext:
    """Who pushes over this session, for the push's audit record."""
    cert = principal.certificate
    return PushContext(repo_id=target.repo_id, user_id=principal.user_id, key_id=principal.key_id,
                       key_fingerprint=principal.key_fingerprint, protocol=PUSH_PROTOCOL,
                       client_address=client_address,
                       cert_ca_fingerprint=cert.ca_fingerprint if cert else "",
                       # an environment value cannot hold NUL (the hook's fallback reads it there)
                       cert_key_id=cert.key_id.replace("\0", "?") if cert else "",
                       cert_serial=str(cert.serial) if cert else "")


class GitChild:
    """A running git service and the pumps between it and one SSH channel."""

    def __init__(self, runtime: Runtime, principal: access.Principal, command: GitCommand,
                 target: Authorised, *, client_address: str, git_protocol: str | None) -> None:
        self.runtime = runtime
        self.principal = principal
        self.command = command
        self.target = target
        self.client_address = client_address
        self.git_protocol = git_protocol
        self.proc: asyncio.subprocess.Process | None = None
        # git's stdout: a pipe of our own (see _grow_pipe), read through asyncio's transport.
        self.stdout: ChunkReader | None = None
        self.traffic = Traffic()

    async def run(self, process: Any) -> int:
        """Run git with ``process`` (an asyncssh SSHServerProcess) as its stdio; its status."""
        config = self.runtime.config
        repo_path = self.runtime.store.path(self.target.tenant, self.target.repo)
        push = self._receive_pack(repo_path) if self.command.service == RECEIVE_PACK else None
        argv = push.argv() if push is not None else git_argv(
            self.command.service, repo_path, config.hooks_dir, pack_cache=packcache.hook_command(config))
        env = child_env(config, self.principal, self.target, client_address=self.client_address,
                        git_protocol=self.git_protocol, push_limits=push.limits if push else limits.NO_LIMITS)
        # The proc-receive hook records the push through this socket (intent, then done), so
        # it is recorded by this process, already connected to the database, and the pipeline
        # URL reaches the pusher's terminal. The pre-receive hook asks it first for the
        # whole-push refusals and the size limits on the quarantine.
        hooks = push.hook_socket(self.runtime.sessions) if push is not None else None
        if hooks is not None:
            env.update(hooks.env())
        out_read, out_write = os.pipe()
        _grow_pipe(out_write)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=out_write,
                stderr=asyncio.subprocess.PIPE, env=env, pass_fds=hooks.pass_fds if hooks else (),
                start_new_session=True, cwd=str(repo_path))
        except BaseException:
            os.close(out_read)
            if hooks is not None:
                hooks.close()
            raise
        finally:
            os.close(out_write)
            if hooks is not None:
                hooks.git_started()
        metrics.git_child_started()
        if hooks is not None:
            # A thread of its own: it outlives the client's connection, and it ends when
            # every git process holding the other end of the socket has exited.
            hooks.start()
        stdout_transport = None
        self.stdout = reader = ChunkReader(limit=PIPE_SIZE)
        try:
            stdout_transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: reader, os.fdopen(out_read, "rb", buffering=0))
            return await self._pump(process)
        finally:
            metrics.git_child_finished()
            await self.kill()
            if stdout_transport is not None:
                stdout_transport.close()

    def _receive_pack(self, repo_path: Path) -> launcher.ReceivePack:
        target = self.target
        return launcher.ReceivePack(
            self.runtime.config, push_context(self.principal, target, self.client_address), repo_path,
            f"{target.tenant}/{target.repo}", target.permission, user=self.principal.user_name,
            limits=target.quotas.push_limits(self.runtime.config))

    async def _pump(self, process: Any) -> int:
        proc = self.proc
        assert proc is not None and proc.stdin and proc.stderr and self.stdout is not None
        to_git = asyncio.create_task(_copy_stdin(process.stdin, proc.stdin, self.traffic))
        sinks = [_Sink(process.stdout, self.traffic), _Sink(process.stderr, self.traffic)]
        scan = self._scanner(sinks[1]) if self.command.service == RECEIVE_PACK else None
        from_git = asyncio.gather(_copy_out(self.stdout, sinks[0], scan),
                                  _copy_out(proc.stderr, sinks[1], scan))
        closed = asyncio.ensure_future(process.channel.wait_closed())
        finished = asyncio.ensure_future(_wait_all(from_git, proc.wait()))
        silent = asyncio.ensure_future(self._until_silent(process.channel))
        try:
            done, _ = await asyncio.wait({finished, closed, silent},
                                         return_when=asyncio.FIRST_COMPLETED)
            if finished not in done and closed not in done:
                return self._close_silent(process)  # run() kills git's process group
            if finished not in done:
                if self.command.service != RECEIVE_PACK:
                    log.info("client went away during %s %s; stopping git", self.command.service,
                             self.command.full_name)
                    return 255
                await self._let_receive_pack_finish(to_git, sinks, finished)
                return 255
            finished.result()
            return proc.returncode if proc.returncode is not None else 255
        finally:
            to_git.cancel()
            closed.cancel()
            silent.cancel()
            finished.cancel()
            from_git.cancel()
            with contextlib.suppress(BaseException):
                await from_git

    async def _until_silent(self, channel: Any) -> None:
        """Return once the channel has been silent for the channel idle timeout; never for
        receive-pack. Before its ref commands the client may be running its pre-push hook
        (git runs it with the connection open, for as long as the hook takes); after them
        the push may be recording (docs/architecture.md, "A hang-up changes nothing")."""
        timeout = self.runtime.config.ssh_channel_idle_timeout
        if timeout <= 0 or self.command.service == RECEIVE_PACK:
            await asyncio.get_running_loop().create_future()  # cancelled by _pump
        await until_silent(timeout, lambda: self.traffic.moved(channel))

    def _close_silent(self, process: Any) -> int:
        """Say why the channel is closed, on stderr; the status to exit with."""
        timeout = self.runtime.config.ssh_channel_idle_timeout
        log.info("closing silent channel of %s %s from %s (nothing moved for %ss)",
                 self.command.service, self.command.full_name, self.client_address, timeout)
        message = (f"ERROR: nothing was sent or received on this channel for {timeout:g} s "
                   f"({CHANNEL_IDLE_SETTING}); closing it\n")
        with contextlib.suppress(Exception):
            process.stderr.write(message.encode())
        return SILENT_STATUS

    async def _let_receive_pack_finish(self, to_git: asyncio.Task[None], sinks: list[_Sink],
                                       finished: asyncio.Future[None]) -> None:
        """The client hung up during a push. A receive-pack that has read its ref commands
        may be recording or moving refs: killing it then would leave refs on disk with no
        record. So it gets end-of-file on stdin (one that had not read its commands yet exits
        at once) and its output goes nowhere, and it finishes within receive_finish_timeout;
        only then is it killed (the reconciler settles what it left)."""
        log.info("client went away during %s %s; letting git finish its hooks",
                 self.command.service, self.command.full_name)
        to_git.cancel()
        with contextlib.suppress(BaseException):
            await to_git
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        for sink in sinks:
            sink.broken = True
        timeout = self.runtime.config.receive_finish_timeout
        try:
            await asyncio.wait_for(asyncio.shield(finished), timeout)
        except TimeoutError:
            log.warning("%s %s still running %ss after its client left; killing it",
                        self.command.service, self.command.full_name, timeout)
        except Exception:  # noqa: BLE001  (git's own failure; nothing more to deliver)
            pass

    def _scanner(self, stderr: _Sink) -> Callable[[bytes], None]:
        """Watch receive-pack's output: count refusals, and when git cut the pack off at
        receive.maxInputSize, tell the pusher which setting did it (git names only the size)."""
        told = False

        def scan(data: bytes) -> None:
            nonlocal told
            report.count_refusals(data)
            if not told and not stderr.broken and limits.GIT_INPUT_TOO_LARGE.encode() in data:
                told = True
                stderr.stream.write(f"error: {limits.input_too_large(self.runtime.config.max_push_bytes)}\n".encode())
        return scan

    async def kill(self) -> None:
        """Stop the child's whole process group (git, hooks, pack-objects) and reap it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        # proc.stop_group's steps, waited for without blocking the event loop.
        for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
            signal_group(proc.pid, sig)  # when it fails the group is gone: the wait returns
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue


def _grow_pipe(fd: int) -> None:
    """Make the pipe behind ``fd`` PIPE_SIZE deep, when the system allows (Linux; at most
    /proc/sys/fs/pipe-max-size, 1 MiB by default); else it keeps its 64 KiB."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class ChunkReader(asyncio.Protocol):
    """A pipe's data as the chunks asyncio read, handed on without copying.

    ``asyncio.StreamReader`` copies every chunk into its buffer and again out of it; a clone
    moves each byte of the pack through here, so this reader queues the chunks themselves.
    Reading from the pipe pauses while ``limit`` bytes wait (git then blocks on the full pipe,
    as it would on a slow client), and resumes when they are taken.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.ended = False
        self.paused = False
        self.transport: asyncio.ReadTransport | None = None
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= self.limit and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self.ended = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True  # what was read is still handed on; git's status tells the rest
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self, n: int) -> bytes:
        """The next chunk, at most ``n`` bytes; b"" at the end."""
        while not self.chunks and not self.ended:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if not self.chunks:
            return b""
        data = self.chunks.popleft()
        if len(data) > n:
            data, rest = data[:n], data[n:]
            self.chunks.appendleft(rest)
        self.size -= len(data)
        if self.paused and self.size < self.limit and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class _Sink:
    """One output stream of the channel; once ``broken`` (the client left, or a write failed),
    git's output is read and dropped so that git never blocks on a full pipe."""

    def __init__(self, stream: Any, traffic: Traffic) -> None:
        self.stream = stream
        self.traffic = traffic
        self.broken = False

    async def write(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.stream.write(data)
            self.traffic.written += len(data)
            await self.stream.drain()
        except (BrokenPipeError, ConnectionError, OSError, asyncssh.Error):
            self.broken = True


async def _wait_all(*aws: Any) -> None:
    for aw in aws:
        await aw


async def _copy_stdin(source: Any, sink: asyncio.StreamWriter, traffic: Traffic) -> None:
    """Channel → git stdin; at the client's EOF, close git's stdin (git may exit early)."""
    try:
        while data := await source.read(CHUNK):
            metrics.bytes("received", len(data))
            traffic.received += len(data)
            sink.write(data)
            await sink.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # git stopped reading (it answered and exited); nothing more to deliver
    finally:
        with contextlib.suppress(Exception):
            sink.close()


async def _copy_out(source: asyncio.StreamReader | ChunkReader, sink: _Sink,
                    scan: Callable[[bytes], None] | None = None) -> None:
    """git stdout/stderr → channel, waiting for the client's window before reading more.

    ``scan`` sees every chunk (receive-pack's report: see :meth:`GitChild._scanner`).
    """
    while data := await source.read(OUT_CHUNK):
        metrics.bytes("sent", len(data))
        if scan is not None:
            scan(data)
        await sink.write(data)
