"""The one receive-pack launcher: what the SSH session and Repour's internal pushes both do
to start git's receive-pack and record what it accepts.

A :class:`ReceivePack` names one push to start: its repository, its pusher (the audit facts of
:class:`gitserver.push.ledger.PushContext`), the permission already checked and the
limits it is held to. From it come git's argument list (:meth:`ReceivePack.argv`), the hooks'
environment (:meth:`ReceivePack.hook_env`) and a :class:`HookSocket`: the socket pair whose
child end git inherits (``GITSERVER_HOOK_FD``) and a thread answering the other end with a
:class:`gitserver.push.ledger.HookService` (pre-receive's refusals and limits,
proc-receive's intent and done, in gitserver.push.messages).

Each caller starts git its own way (the SSH session with asyncio and its channel pumps,
Repour through ``git push --receive-pack``); the socket is served by a thread in both, not
tied to the caller's connection, so a client that hangs up after its commands does not stop
the hooks from recording the push (docs/architecture.md, "A hang-up changes nothing").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.git.store import RECEIVE_PACK, git_argv
from gitserver.observe import metrics
from gitserver.pipelines import logstore
from gitserver.policy import access
from gitserver.provenance.pushlog import PushLog
from gitserver.push import ledger, limits
from gitserver.push.hookenv import ENV_CONFIG, ENV_HOOK_FD, HookEnv
from gitserver.push.ledger import PushContext

log = logging.getLogger(__name__)

# How long a caller that waits for git (Repour) waits for the hook thread after git exited.
HOOK_THREAD_JOIN_SECONDS = 60.0


def push_limits(config: Config, repo_quota_bytes: int | None, tenant_quota_bytes: int | None,
                held: tuple[int, int] = (0, 0)) -> limits.PushLimits:
    """The limits every push is held to: the server's sizes and the repository's and
    tenant's quotas. ``held``: the repository's and the tenant's bytes stored outside their
    directories (pipeline logs, gitserver.pipelines.logstore.held_bytes), counted in the quotas."""
    return limits.PushLimits(config.max_blob_bytes, config.max_push_bytes, repo_quota_bytes, tenant_quota_bytes,
                             repo_log_bytes=held[0], tenant_log_bytes=held[1])


@dataclasses.dataclass(frozen=True)
class Quotas:
    """The disk quotas a push into one repository is held to (None: none set), and the
    repository's and its tenant's pipeline log bytes, which count in them."""

    repo_bytes: int | None = None
    tenant_bytes: int | None = None
    held_bytes: tuple[int, int] = (0, 0)

    @classmethod
    def of(cls, session: Session, repo: models.Repository) -> Quotas:
        return cls(repo.quota_bytes, repo.tenant.quota_bytes, logstore.held_bytes(session, repo))

    def push_limits(self, config: Config) -> limits.PushLimits:
        return push_limits(config, self.repo_bytes, self.tenant_bytes, self.held_bytes)


NO_QUOTAS = Quotas()


def hook_env(config: Config, ctx: PushContext, repo: str, permission: str, *, user: str = "",
             push_limits: limits.PushLimits = limits.NO_LIMITS, config_file: str | None = None) -> HookEnv:
    """What the hooks of a git child are told: who pushes (``ctx``, ``user``) into ``repo``
    with which ``permission``, where the database is, and the limits. ``config_file``: the
    server's configuration file, by default this process's ``GITSERVER_CONFIG``."""
    return HookEnv(
        ctx, repo=repo, permission=permission, data_dir=str(config.data_dir),
        database_url=config.effective_database_url, public_http_url=config.http_base_url, user=user,
        signing_agent=config.signing_agent, signing_key=config.signing_key,
        config_file=os.environ.get(ENV_CONFIG, "") if config_file is None else config_file,
        limits=push_limits)


@dataclasses.dataclass(frozen=True)
class ReceivePack:
    """One receive-pack to start into ``repo_path`` (``repo``: tenant/name) for ``ctx``'s
    pusher, whose ``permission`` was checked when the push was authorised."""

    config: Config
    ctx: PushContext
    repo_path: Path
    repo: str
    permission: str
    user: str = ""  # the pusher's name, for the hooks
    limits: limits.PushLimits = limits.NO_LIMITS

    def argv(self) -> list[str]:
        """git's argument list, ending with the repository's path."""
        return git_argv(RECEIVE_PACK, self.repo_path, self.config.hooks_dir,
                        settings=limits.git_settings(self.limits))

    def hook_env(self, config_file: str | None = None) -> HookEnv:
        return hook_env(self.config, self.ctx, self.repo, self.permission, user=self.user,
                        push_limits=self.limits, config_file=config_file)

    def hook_socket(self, sessions: sessionmaker[Session]) -> HookSocket:
        """The socket the hooks of this receive-pack talk to, not yet served."""
        service = ledger.HookService(
            sessions, self.ctx, self.config.http_base_url,
            limits.QuarantineCheck(self.limits, self.repo_path, self.repo),
            can_write=access.at_least(self.permission, access.WRITE),
            push_log=PushLog(self.config), repo_path=self.repo_path)
        return HookSocket(service, name=f"hooks-{self.ctx.protocol}")


class HookSocket:
    """The socket pair of one receive-pack and the thread that answers its hooks.

    The caller puts :meth:`env` in git's environment and :attr:`pass_fds` in its
    ``pass_fds``, starts git, then calls :meth:`git_started` (our copy of the child's end is
    closed, so the thread gets its end-of-file once every git process holding it exits) and
    :meth:`start`. As a context manager (a caller that waits for git) it starts on entry, and on
    exit closes the child's end and waits for the thread.
    """

    def __init__(self, service: ledger.HookService, name: str) -> None:
        self.service = service
        self._parent, self._child = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._child.fileno(),)

    def env(self) -> dict[str, str]:
        return {ENV_HOOK_FD: str(self._child.fileno())}

    def start(self) -> None:
        self._thread.start()

    def git_started(self) -> None:
        """git holds the child's end now: drop ours."""
        self._child.close()

    def close(self) -> None:
        """git could not be started: nothing will be served."""
        self._child.close()
        self._parent.close()

    def __enter__(self) -> HookSocket:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.git_started()  # git and its hooks have exited: the thread gets its end-of-file
        self._thread.join(timeout=HOOK_THREAD_JOIN_SECONDS)

    def _serve(self) -> None:
        ledger.serve_hook_socket(self._parent, self.service)
        if self.service.pipeline_ids:
            metrics.push("recorded")
