"""The asyncssh daemon: authentication by public key in SQL, one git command per channel.

Layers as asyncssh designs them: :class:`GitSSHServer` authenticates (one instance per
connection), :func:`Daemon.handle` serves one exec request, :class:`gitserver.ssh.session.GitChild`
runs git. Every refusal is one ``ERROR: …`` line on stderr and exit status 128. Commands that are
not git's are the self-service commands (gitserver.ssh.selfservice: exit status 1 on an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Hashable
from typing import Any, TypeVar

import asyncssh

from gitserver.db.session import transaction
from gitserver.identity import certs
from gitserver.identity.keys import fingerprint_of_blob
from gitserver.observe import metrics
from gitserver.policy import access, ssh_algorithms
from gitserver.policy.errors import (
    DATABASE_UNREACHABLE_MESSAGE,
    ConfigError,
    Forbidden,
    GitserverError,
    InvalidInput,
    Unavailable,
    is_database_unreachable,
)
from gitserver.policy.values import parse_max_startups
from gitserver.push import reconcile
from gitserver.runtime import Runtime
from gitserver.ssh import certauth, certlogin, drain, holders, hostkeys, identity, transport
from gitserver.ssh.commands import is_git_request, is_lfs_request, parse_command, parse_lfs_command
from gitserver.ssh.holders import HolderLimiter
from gitserver.ssh.lfs import LfsFront
from gitserver.ssh.selfservice import SelfService, help_hint
from gitserver.ssh.session import GitChild, client_git_protocol
from gitserver.ssh.startups import Admission, StartupLimiter

log = logging.getLogger(__name__)

REFUSED_STATUS = 128
# Bigger than asyncssh's 2 MiB default so one connection can fill a fast link.
CHANNEL_WINDOW = 8 * 1024 * 1024
# Unknown keys one connection may offer before it is dropped. asyncssh sets no limit, and each
# offer costs a database lookup: without one, an unauthenticated client could keep the
# database busy for the whole login grace time. Generous for agents holding many keys.
MAX_UNKNOWN_KEYS = 20

_Found = TypeVar("_Found")


class GitSSHServer(asyncssh.SSHServer):
    """Authentication of one connection: public keys only, identity from the signed step."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.conn: asyncssh.SSHServerConnection | None = None
        self.identity: identity.Identity | None = None
        self.candidates: dict[bytes, identity.Identity] = {}
        self.signed_key: bytes | None = None
        self.cert_cas: list[bytes] = []  # CAs of the certificates offered and let in so far
        self.authenticated_at = 0.0
        self.unknown_keys = 0
        self.channels = 0
        self.address = ""
        self.starting = False  # counted by daemon.startups until it authenticates or goes
        self.holder: Hashable | None = None  # counted by daemon.holders under this while set
        # Authenticated, but over a cap of daemon.holders: why every channel is refused. Such a
        # connection stays counted by daemon.startups (it never got in) until it is closed.
        self.refusal: str | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.daemon.connections.add(conn)
        metrics.ssh_connection()
        self.address = str((conn.get_extra_info("peername") or ("",))[0])
        if len(self.daemon.connections) > self.daemon.config.ssh_max_connections:
            room = self.daemon.startups.make_room(self.address)
            if room.refusal is not None:
                log.warning("connection cap %d reached; refusing %s",
                            self.daemon.config.ssh_max_connections, self.address)
                asyncio.get_running_loop().call_soon(
                    conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, room.refusal)
                return
            _evict(room)
        admission = self.daemon.startups.admit(self.address, self)
        if admission.refusal is not None:
            log.warning("refusing %s: %s", self.address, admission.refusal)
            metrics.ssh_auth("failure", "max-startups")
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, admission.refusal)
            return
        _evict(admission)
        self.starting = True
        # asyncssh asks the owner about a key both for an unsigned probe and for the signed
        # request, and does not say which key finally verified. Wrap the connection's own
        # check, which sees the signature, to learn the key that really authenticated.
        original = conn.validate_public_key

        async def validate_signed(username: str, key_data: bytes, msg: bytes,
                                  signature: bytes) -> bool:
            if certs.is_certificate(key_data):
                ok = await self._validate_certificate(original, username, key_data, msg, signature)
            else:
                ok = await original(username, key_data, msg, signature)
            if ok and msg:
                self.signed_key = key_data
            return ok

        conn.validate_public_key = validate_signed  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        self._started()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.holder is not None:
            self.daemon.holders.done(self.holder, self.address)
            self.holder = None
        if self.conn is not None:
            self.daemon.connections.discard(self.conn)

    def _started(self) -> None:
        """The connection no longer counts as an unauthenticated one."""
        if self.starting:
            self.starting = False
            self.daemon.startups.done(self.address, self)

    def channel_opened(self) -> None:
        self.channels += 1
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def channel_finished(self) -> None:
        """A channel's command is over; with none left, the idle clock starts. A connection
        over a cap has shown its refusal now, and goes."""
        self.channels -= 1
        if self.refusal is not None:
            self._close_refused()
            return
        self._arm_idle()

    def _arm_idle(self) -> None:
        timeout = self.daemon.config.ssh_idle_timeout
        if self.channels == 0 and timeout > 0 and self.identity is not None and self.conn is not None:
            self.idle_timer = asyncio.get_running_loop().call_later(timeout, self._idle, timeout)

    def _idle(self, timeout: float) -> None:
        if self.channels == 0 and self.conn is not None:
            log.info("closing idle connection from %s (no channel for %ss)", self.address, timeout)
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION,
                                 f"idle: no channel open for {timeout:g} seconds")

    def begin_auth(self, username: str) -> bool:
        return True  # the SSH user name is ignored: the key is the identity

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Whether the key is known (and its user enabled); binds nothing by itself."""
        blob = key.public_data
        if blob not in self.candidates:
            if self.unknown_keys >= MAX_UNKNOWN_KEYS:
                return False
            if not certauth.key_allowed(self.daemon.trust, blob, self.address):
                self.unknown_keys += 1
                return False
            reachable, found = await self._unless_unavailable(
                asyncio.to_thread(self.daemon.lookup, fingerprint_of_blob(blob)))
            if not reachable:
                return False
            if found is None:
                metrics.ssh_auth("failure", "unknown-key")
                self.unknown_keys += 1
                if self.unknown_keys >= MAX_UNKNOWN_KEYS and self.conn is not None:
                    self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                         "too many unknown keys offered")
                return False
            self.candidates[blob] = found
        return True

    async def _unless_unavailable(self, lookup: Awaitable[_Found]) -> tuple[bool, _Found | None]:
        """``(True, lookup's result)``; ``(False, None)`` once the connection is closed because
        the database is unreachable (an outage: the client is told so, no traceback)."""
        try:
            return True, await lookup
        except Exception as exc:
            if not is_database_unreachable(exc):
                raise
            self._disconnect_unavailable()
            return False, None

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # CAs are trusted another way: gitserver.ssh.certauth says why

    async def _validate_certificate(self, original: certauth.Validate, username: str, blob: bytes,
                                    msg: bytes, signature: bytes) -> bool:
        """A certificate, judged once (probe or signed request) by gitserver.ssh.certauth;
        asyncssh checks each signature."""
        if blob in self.candidates:
            return await original(username, blob, msg, signature)
        if self.unknown_keys >= MAX_UNKNOWN_KEYS or self.conn is None:
            return False
        reachable, found = await self._unless_unavailable(
            certauth.judge(self.conn, self.daemon, original, username, blob, msg, signature,
                           self.address, self.cert_cas))
        if not reachable:
            return False
        if found is None:
            self.unknown_keys += 1
            return False
        self.candidates[blob] = found
        return True

    def auth_completed(self) -> None:
        """Bind the identity of the key whose signature verified, and only that one."""
        found = self.candidates.get(self.signed_key) if self.signed_key else None
        if found is None:  # cannot happen with public-key auth only; refuse rather than guess
            log.error("authentication completed without a verified key; closing")
            metrics.ssh_auth("failure", "unverified-key")
            if self.conn is not None:
                self.conn.close()
            return
        self.identity = found
        self.candidates.clear()
        holder, label = holders.holder_of(found.principal)
        self.refusal = self.daemon.holders.admit(holder, label, self.address)
        if self.refusal is not None:
            self._refuse_connection()
            return
        self.holder = holder
        self._started()
        self._arm_idle()  # authenticated, no channel yet
        self.authenticated_at = asyncio.get_running_loop().time()
        metrics.ssh_auth("success", "certificate" if found.principal.certificate else "publickey")
        if found.principal.key_id is not None:
            self.daemon.touch_key(found.principal.key_id)

    def since_login(self) -> float:
        return asyncio.get_running_loop().time() - self.authenticated_at

    def _disconnect_unavailable(self) -> None:
        """No channel exists before authentication, so the reason goes in the disconnect
        message, which OpenSSH prints (``Received disconnect from …: gitserver is temporarily
        unavailable…``) before git's own "Could not read from remote repository"."""
        log.warning("database unreachable: cannot look up the key of %s", self.address)
        metrics.ssh_auth("failure", "database-unreachable")
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_SERVICE_NOT_AVAILABLE, DATABASE_UNREACHABLE_MESSAGE)

    def _refuse_connection(self) -> None:
        """Over a cap of daemon.holders. Refused here, the client would only see
        "Permission denied"; so its first channel gets the reason as an ``ERROR:`` line, and
        a connection that opens none goes after the login grace time."""
        log.warning("refusing %s after login: %s", self.address, self.refusal)
        metrics.ssh_auth("failure", "max-connections")
        self.idle_timer = asyncio.get_running_loop().call_later(
            self.daemon.config.ssh_login_grace_time, self._close_refused)

    def _close_refused(self) -> None:
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, self.refusal or "")

    # No forwarding of any kind, no other channel types: the defaults refuse too, but the
    # refusal is part of the contract, so it is spelled out.
    def connection_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False

    def tun_requested(self, *args: Any) -> bool:
        return False


class Daemon:
    """The SSH daemon's shared state: runtime, live connections, running git children."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sessions = runtime.sessions
        self.config = runtime.config
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.children: set[GitChild] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.open_channels = 0
        self.startups: StartupLimiter[GitSSHServer] = StartupLimiter(
            parse_max_startups(self.config.ssh_max_startups),
            parse_max_startups(self.config.ssh_per_source_max_startups))
        self.holders = HolderLimiter(self.config.ssh_max_connections_per_user,
                                     self.config.ssh_max_connections_per_source)
        self.selfservice = SelfService(runtime)
        self.lfs = LfsFront(runtime)
        self.trust = certlogin.Trust.from_config(self.config)

    def lookup(self, fingerprint: str) -> identity.Identity | None:
        with transaction(self.runtime.sessions) as session:
            return identity.identity_for_fingerprint(session, fingerprint)

    def touch_key(self, key_id: int) -> None:
        """Update last_used_at in the background: the login does not wait for it."""
        def touch() -> None:
            with transaction(self.runtime.sessions) as session:
                identity.touch_key(session, key_id)

        task = asyncio.get_running_loop().create_task(asyncio.to_thread(touch))
        self.tasks.add(task)
        task.add_done_callback(self._touched)

    def _touched(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not update last_used_at: %s", task.exception())

    async def handle(self, process: asyncssh.SSHServerProcess) -> None:
        """Serve one session channel: refuse, greet, or run one git command."""
        owner = process.channel.get_connection().get_owner()
        assert isinstance(owner, GitSSHServer)
        owner.channel_opened()
        self.open_channels += 1
        try:
            await self._handle(process, owner)
        finally:
            self.open_channels -= 1
            owner.channel_finished()

    async def _handle(self, process: asyncssh.SSHServerProcess, owner: GitSSHServer) -> None:
        try:
            status = await self._serve(process, owner)
        except asyncio.CancelledError:
            raise
        except GitserverError as exc:
            status = _refuse(process, exc.message)
        except Exception as exc:
            if is_database_unreachable(exc):  # an outage, not a bug: say so, no traceback
                log.warning("SSH session failed: database unreachable")
                status = _refuse(process, DATABASE_UNREACHABLE_MESSAGE)
            else:  # log once here; the client gets one safe line
                log.exception("SSH session failed")
                status = _refuse(process, "internal error; the administrator can find it in the log")
        with contextlib.suppress(Exception):
            process.exit(status)
            # git's last bytes may still sit in the channel's send buffer; a graceful shutdown
            # waits for this channel to be closed by the client, not just for git to exit.
            await asyncio.wait_for(process.channel.wait_closed(), self.config.ssh_shutdown_grace)

    async def _serve(self, process: asyncssh.SSHServerProcess, owner: GitSSHServer) -> int:
        found = owner.identity
        if found is None:
            raise Forbidden("not authenticated")
        if owner.refusal is not None:
            raise Unavailable(owner.refusal)
        if owner.channels > self.config.ssh_max_channels_per_connection:
            raise Unavailable("too many channels on this connection")
        if process.subsystem is not None:
            raise Forbidden(f"subsystem '{_printable(process.subsystem)}' is not available; "
                            "only git commands are")
        if found.principal.certificate is not None and owner.since_login() > certauth.RECHECK_AFTER:
            found = await asyncio.to_thread(self._current_certificate, found)
        if process.command is None:
            process.stdout.write(f"{found.greeting}\n{help_hint(self.config)}\n".encode())
            return 0
        if is_lfs_request(process.command):
            metrics.git_session(process.command.split(" ", 1)[0])
            return await self.lfs.serve(process, found.principal, parse_lfs_command(process.command))
        if not is_git_request(process.command):
            return await self.selfservice.serve(process, found.principal)  # exit 1 on errors
        command = parse_command(process.command)
        target = await asyncio.to_thread(self._authorise, found.principal, command)
        metrics.git_session(command.service)
        peer = process.get_extra_info("peername") or ("", 0)
        child = GitChild(self.runtime, found.principal, command, target,
                         client_address=str(peer[0]),
                         git_protocol=client_git_protocol(process.env))
        self.children.add(child)
        try:
            return await child.run(process)
        finally:
            self.children.discard(child)

    def _current_certificate(self, found: identity.Identity) -> identity.Identity:
        with transaction(self.runtime.sessions) as session:
            return certauth.current_or_forbidden(session, self.trust, found)

    def _authorise(self, principal: access.Principal, command: Any) -> identity.Authorised:
        with transaction(self.runtime.sessions) as session:
            # The identity was bound when the connection authenticated, but a multiplexed
            # connection (OpenSSH ControlMaster/ControlPersist) serves commands for as long as
            # the client keeps it: re-read the key for every command, so a removed key, a
            # disabled user or a lowered role takes effect on the next command, not the next
            # connection.
            if principal.certificate is not None:  # re-checked by _current_certificate
                return identity.authorise(session, principal, command)
            current = identity.identity_for_fingerprint(session, principal.key_fingerprint)
            if current is None:
                raise Forbidden("this key is no longer valid (removed, or its user disabled); "
                                "reconnect to authenticate again")
            return identity.authorise(session, current.principal, command)


def _evict(admission: Admission[GitSSHServer]) -> None:
    """Disconnect the login a new one was admitted in place of (gitserver.ssh.startups)."""
    victim = admission.evict
    if victim is None or victim.conn is None:
        return
    log.warning("closing a login from %s: %s", victim.address, admission.evict_reason)
    metrics.ssh_auth("failure", "max-startups")
    asyncio.get_running_loop().call_soon(
        victim.conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, admission.evict_reason)


def _printable(text: str) -> str:
    return text[:40] if text.isascii() and text.isprintable() else "?"


def _refuse(process: asyncssh.SSHServerProcess, message: str) -> int:
    """One ``ERROR:`` line on stderr (bytes: the channel has no encoding)."""
    line = " ".join(message.split())  # never more than one line
    with contextlib.suppress(Exception):
        process.stderr.write(f"ERROR: {line}\n".encode("utf-8", "replace"))
    return REFUSED_STATUS


async def start(daemon: Daemon, host_keys: list[asyncssh.SSHKeyPair]) -> asyncssh.SSHAcceptor:
    """Listen on config.ssh_host:ssh_port."""
    config = daemon.config
    return await asyncssh.create_server(
        lambda: GitSSHServer(daemon), config.ssh_host, config.ssh_port,
        server_host_keys=host_keys, process_factory=daemon.handle, encoding=None,
        password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
        host_based_auth=False, allow_pty=False, agent_forwarding=False, x11_forwarding=False,
        allow_scp=False, sftp_factory=None, line_editor=False,
        **ssh_algorithms.algorithm_options(config), login_timeout=config.ssh_login_grace_time,
        keepalive_interval=config.ssh_keepalive_interval,
        keepalive_count_max=config.ssh_keepalive_count_max,
        window=CHANNEL_WINDOW, tunnel=transport.Listener(reuse_address=True))


async def serve(runtime: Runtime) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    config = runtime.config
    host_keys = hostkeys.for_config(config)
    daemon = Daemon(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    acceptor = await start(daemon, host_keys)
    log.info("SSH daemon listening on %s:%s", config.ssh_host, config.ssh_port)
    # Pushes cut short when a daemon died (this one, before a restart) are settled in the
    # background; new pushes are served meanwhile.
    threading.Thread(target=_startup_pass, args=(runtime,), name="reconciler",
                     daemon=True).start()
    await stop.wait()
    log.info("shutting down: no new connections; %d transfer(s) running", len(daemon.children))
    acceptor.close()
    await drain.drain(daemon, config.ssh_shutdown_grace)
    return 0


def _startup_pass(runtime: Runtime) -> None:
    try:
        reconcile.startup_pass(runtime, "ssh daemon")
    except Exception:  # the worker's periodic pass tries again
        log.exception("reconciling refs at start failed")


def run(runtime: Runtime) -> int:
    """``gitserver ssh`` (built by ``gitserver.cmd.wiring``): the daemon until SIGTERM/SIGINT."""
    try:
        return asyncio.run(serve(runtime))
    except ConfigError as exc:
        log.error("%s", exc.message)
        print(f"error: {exc.message}", flush=True)
        return 1
    except InvalidInput as exc:  # pragma: no cover  (config validated before)
        log.error("%s", exc.message)
        return 1
