"""The work of each self-service command: SQL in the caller's session, never committed.

Synchronous on purpose: the SSH daemon runs it in a worker thread (gitserver.ssh.selfservice.
channel), as it does every database call. The access rule is the one every front uses
(:func:`gitserver.policy.access.authorise`, the ``admin`` services and their ``check_*`` rules), so a
hidden repository answers exactly like a missing one, as over git and the REST API.

Each command returns the REST API's objects (gitserver.shapes); gitserver.ssh.selfservice.
render turns them into lines for people, or prints them as they are with ``--json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver import shapes
from gitserver.admin import keys as admin_keys
from gitserver.admin import repos as admin_repos
from gitserver.admin import rules as admin_rules
from gitserver.admin import tenants as admin_tenants
from gitserver.admin import tokens as admin_tokens
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.identity import weblogin
from gitserver.pipelines import jobs, oncreate
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, InvalidInput, NotFound
from gitserver.runtime import Runtime
from gitserver.ssh import identity
from gitserver.ssh.selfservice.parse import SelfServiceCommand

# One key line, as the REST API accepts it (its "key" field).
MAX_KEY_BYTES = 16 * 1024


@dataclasses.dataclass(frozen=True)
class Result:
    """What a command found or did: ``body`` is the JSON ``--json`` prints; ``key_id`` the
    key the caller is logged in with (``keys list`` marks it)."""

    body: dict[str, Any]
    key_id: int | None = None


@dataclasses.dataclass(frozen=True)
class LogPiece:
    """A piece of a pipeline's log from some offset, the offset after it, and the status."""

    data: bytes
    offset: int
    status: str

    @property
    def final(self) -> bool:
        return self.status in models.FINAL_STATES


def current_principal(session: Session, principal: access.Principal) -> access.Principal:
    """The principal as its key stands now: a multiplexed connection serves commands long
    after it authenticated, so a removed key or a disabled user stops at the next command."""
    if principal.certificate is not None:
        return principal  # a certificate login: checked again by the daemon before each command
    found = identity.identity_for_fingerprint(session, principal.key_fingerprint)
    if found is None:
        raise Forbidden("this key is no longer valid (removed, or its user disabled); "
                        "reconnect to authenticate again")
    return found.principal


def run(session: Session, runtime: Runtime, principal: access.Principal,
        command: SelfServiceCommand, stdin: str = "") -> Result:
    """Do ``command`` for ``principal`` (``stdin``: what keys add reads)."""
    principal = current_principal(session, principal)
    handler = _HANDLERS[command.verb]
    return handler(_Call(session, runtime, principal, command, stdin))


@dataclasses.dataclass(frozen=True)
class _Call:
    session: Session
    runtime: Runtime
    principal: access.Principal
    command: SelfServiceCommand
    stdin: str

    def repo(self, need: str) -> models.Repository:
        """The command's repository, when the principal holds ``need`` on it."""
        return access.authorise(self.session, self.principal, self.command.tenant,
                                self.command.repo, need).repo

    def repo_json(self, repo: models.Repository) -> dict[str, Any]:
        """As the API's GET of one repository: with its size on disk."""
        return shapes.repo_json(repo, self.runtime.config, shapes.repo_size(self.runtime.store, repo))

    def user(self) -> models.User:
        """The user behind the key; deploy keys have no keys or tokens to manage."""
        if self.principal.kind != "user" or self.principal.user_id is None:
            raise Forbidden("a deploy key has no keys or tokens of its own; use a user's key")
        user = self.session.get(models.User, self.principal.user_id)
        if user is None:  # removed between the two reads: as good as a removed key
            raise Forbidden("this key is no longer valid; reconnect to authenticate again")
        return user


def _info(call: _Call) -> Result:
    principal = call.principal
    user = call.session.get(models.User, principal.user_id) if principal.user_id else None
    query = select(models.Repository) if principal.is_site_admin else \
        access.readable_repos(principal, principal.tenant_id or 0)
    rows = call.session.scalars(query.order_by(models.Repository.id)).all()
    items = [shapes.reachable_repo_json(r, call.runtime.config, access.permission_on(call.session, principal, r))
             for r in rows]
    return Result({"user": shapes.user_json(user) if user else None, "items": items})


def _visible_tenant(call: _Call, name: str) -> models.Tenant:
    """The tenant ``name`` if the principal may see it (its own; site admins: any), else
    the answer a missing tenant gets."""
    tenant = admin_tenants.get_tenant(call.session, name)
    if not (call.principal.is_site_admin or call.principal.tenant_id == tenant.id):
        raise NotFound(f"tenant {name!r} not found")
    return tenant


def _repo_list(call: _Call) -> Result:
    tenant = _visible_tenant(call, call.command.tenant or call.principal.tenant_name)
    rows = call.session.scalars(access.readable_repos(call.principal, tenant.id)
                                .order_by(models.Repository.id)).all()
    return Result({"items": [shapes.repo_json(r, call.runtime.config) for r in rows]})


def _repo_info(call: _Call) -> Result:
    return Result(call.repo_json(call.repo(access.READ)))


def _repo_create(call: _Call) -> Result:
    tenant = _visible_tenant(call, call.command.tenant)
    if not call.principal.is_tenant_admin(tenant.id):
        raise Forbidden(f"only the admins of tenant {tenant.name!r} may create repositories")
    access.require_scope(call.principal, access.ADMIN)
    repo = oncreate.create_repository(call.session, call.runtime.store, tenant, call.command.repo,
                                      call.command.text, call.command.visibility)
    return Result(call.repo_json(repo))


def _repo_describe(call: _Call) -> Result:
    repo = call.repo(access.ADMIN)
    admin_repos.update_repo(call.session, repo, call.runtime.store, description=call.command.text)
    return Result(call.repo_json(repo))


def _keys_list(call: _Call) -> Result:
    rows = call.session.scalars(admin_keys.user_keys_query(call.user()).order_by(models.PublicKey.id)).all()
    return Result({"items": [shapes.key_json(k) for k in rows]}, key_id=call.principal.key_id)


def _keys_add(call: _Call) -> Result:
    user = call.user()
    lines = [line.strip() for line in call.stdin.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InvalidInput("keys add reads one public key line on stdin, like: "
                           "ssh git@host keys add < ~/.ssh/id_ed25519.pub")
    key = admin_keys.add_user_key(call.session, user, lines[0], call.command.text)
    return Result(shapes.key_json(key), key_id=call.principal.key_id)


def _keys_remove(call: _Call) -> Result:
    user = call.user()
    key = admin_keys.get_user_key(call.session, user, call.command.number)
    check_key_removable(key.id, call.principal.key_id, _key_count(call.session, user))
    body = shapes.key_json(key)
    admin_keys.remove_user_key(call.session, key)
    return Result(body, key_id=call.principal.key_id)


def _key_count(session: Session, user: models.User) -> int:
    return session.scalar(select(func.count()).select_from(admin_keys.user_keys_query(user).subquery())) or 0


def check_key_removable(key_id: int, logged_in_key_id: int | None, keys_left: int) -> None:
    """The key you are logged in with may go only while you keep another one: removing your
    last key over SSH would lock you out with no way back but an admin."""
    if key_id == logged_in_key_id and keys_left <= 1:
        raise Forbidden(f"key {key_id} is the one you are logged in with and your last key; "
                        "add another first (keys add), or you would lock yourself out")


def _token_create(call: _Call) -> Result:
    user = call.user()
    command = call.command
    admin_rules.check_scopes_grantable(call.principal.scopes, command.scopes)
    expires_at = expiry(utcnow(), command.expires_days)
    token, secret = admin_tokens.create_token(call.session, user=user, name=command.text or "ssh",
                                       scopes=command.scopes, expires_at=expires_at)
    return Result(shapes.created_token_json(token, secret))


def expiry(now: dt.datetime, days: int | None) -> dt.datetime | None:
    return None if days is None else now + dt.timedelta(days=days)


def _pipelines(call: _Call) -> Result:
    repo = call.repo(access.READ)
    rows = call.session.scalars(select(models.Pipeline).where(models.Pipeline.repo_id == repo.id)
                                .order_by(models.Pipeline.id.desc()).limit(call.command.limit)).all()
    base = call.runtime.config.http_base_url
    return Result({"items": [shapes.pipeline_json(p, repo, base) for p in rows]})


def read_log(session: Session, principal: access.Principal, pipeline_id: int, offset: int,
             limit: int = 1 << 20) -> LogPiece:
    """The log of a pipeline the principal can read, from ``offset``; a pipeline of a
    repository it cannot read answers like a missing one."""
    principal = current_principal(session, principal)
    pipeline = session.get(models.Pipeline, pipeline_id)
    repo = session.get(models.Repository, pipeline.repo_id) if pipeline is not None else None
    if pipeline is None or repo is None or not access.allows(session, principal, repo, access.READ):
        raise NotFound(f"pipeline {pipeline_id} not found")
    data, next_offset = jobs.read_log(session, pipeline.id, offset, limit)
    return LogPiece(data, next_offset, pipeline.status)


def _login(call: _Call) -> Result:
    """A one-time console sign-in link for the user behind the key (deploy keys have none)."""
    user = call.user()
    now = utcnow()
    secret = weblogin.create_link(call.session, user, now)
    url = weblogin.login_url(call.runtime.config.http_base_url, secret)
    return Result({"url": url, "expires_at": now + weblogin.LINK_LIFETIME})


def _help(call: _Call) -> Result:
    return Result({})


_HANDLERS: dict[str, Callable[[_Call], Result]] = {
    "help": _help, "info": _info, "repo list": _repo_list, "repo info": _repo_info,
    "repo create": _repo_create, "repo describe": _repo_describe, "keys list": _keys_list,
    "keys add": _keys_add, "keys remove": _keys_remove, "token create": _token_create,
    "pipelines": _pipelines, "login": _login,
}
