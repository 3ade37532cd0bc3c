"""Git LFS over SSH: ``git-lfs-authenticate`` and the pure SSH protocol ``git-lfs-transfer``.

``git-lfs-authenticate <repo> upload|download`` prints ``{"href", "header", "expires_in"}``:
the HTTP batch endpoint and a short-lived header standing for this SSH login
(gitserver.lfs.tokens), so the client then talks HTTP. ``git-lfs-transfer <repo>
upload|download`` serves the whole protocol on the channel (gitserver.lfs.transfer); git-lfs
3.x tries it first and falls back to ``git-lfs-authenticate``.

The access decision is the git commands' (the key is read again for every command, as for
git): download needs read, upload write. Refusals are one ``ERROR:`` line and exit 128, like
git's. The channel has no idle timeout of its own: the connection's keepalives
(``ssh_keepalive_interval``) find a dead peer, and a slow client is never cut for being idle
between objects.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncssh

from gitserver.db.session import transaction
from gitserver.lfs.service import LfsService, Target
from gitserver.lfs.transfer import TransferSession
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, NotFound
from gitserver.runtime import Runtime
from gitserver.ssh import identity
from gitserver.ssh.commands import LFS_AUTHENTICATE, LfsCommand

log = logging.getLogger(__name__)


class LfsFront:
    """Serves the LFS commands of one SSH daemon (one LfsService for all its channels)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._service: LfsService | None = None

    @property
    def service(self) -> LfsService:
        if self._service is None:
            r = self.runtime
            self._service = LfsService(r.config, r.sessions, r.store)
        return self._service

    async def serve(self, process: asyncssh.SSHServerProcess, principal: access.Principal,
                    command: LfsCommand) -> int:
        if command.verb != LFS_AUTHENTICATE and not self.runtime.config.lfs_ssh_transfer:
            # git-lfs then falls back to git-lfs-authenticate and HTTP.
            raise Forbidden("git-lfs-transfer is turned off on this server (lfs_ssh_transfer); "
                            "use git-lfs-authenticate")
        target, can_write = await asyncio.to_thread(self.authorise, principal, command)
        if command.verb == LFS_AUTHENTICATE:
            answer = await asyncio.to_thread(self.service.authenticate_answer, target)
            process.stdout.write(json.dumps(answer).encode() + b"\n")
            return 0
        session = TransferSession(self.service, target, _reader(process), _writer(process), can_write)
        await session.run()
        return 0

    def authorise(self, principal: access.Principal, command: LfsCommand) -> tuple[Target, bool]:
        with transaction(self.runtime.sessions) as session:
            current = identity.identity_for_fingerprint(session, principal.key_fingerprint)
            if current is None:
                raise Forbidden("this key is no longer valid (removed, or its user disabled); "
                                "reconnect to authenticate again")
            who = current.principal
            try:
                target = self.service.authorise(session, who, command.tenant, command.repo, command.operation)
            except access.RepoHidden:
                raise NotFound(f"repository '{command.full_name}' not found or you have no access") from None
            except access.PermissionTooLow as exc:
                raise Forbidden(f"you have {exc.permission} access to '{command.full_name}' "
                                "and cannot upload LFS objects") from None
            repo = self.service.repo_row(session, target)
            return target, access.allows(session, who, repo, access.WRITE)


def _reader(process: asyncssh.SSHServerProcess) -> Any:
    stdin = process.stdin

    async def read(n: int) -> bytes:
        try:
            return bytes(await stdin.readexactly(n))
        except asyncio.IncompleteReadError as exc:
            return bytes(exc.partial)

    return read


def _writer(process: asyncssh.SSHServerProcess) -> Any:
    stdout = process.stdout

    async def write(data: bytes) -> None:
        stdout.write(data)
        await stdout.drain()

    return write
