"""Who an SSH key is, and which repository an SSH command may touch: the SQL side of the
SSH front, kept apart from asyncssh so it runs in a worker thread and is easy to test.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.git.store import RECEIVE_PACK
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, NotFound
from gitserver.push import launcher
from gitserver.ssh.commands import GitCommand


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated principal and the line that greets it on a bare ``ssh git@host``."""

    principal: access.Principal
    greeting: str


@dataclasses.dataclass(frozen=True)
class Authorised:
    """A command the principal may run: the repository and the permission it holds there."""

    repo_id: int
    tenant: str
    repo: str
    permission: str
    # What a push is held to (none for a fetch: its log bytes are not summed).
    quotas: launcher.Quotas = launcher.NO_QUOTAS


def identity_for_fingerprint(session: Session, fingerprint: str) -> Identity | None:
    """The identity a key stands for; None when the key is unknown or its user disabled."""
    key = session.scalars(
        select(models.PublicKey).where(models.PublicKey.fingerprint == fingerprint)).one_or_none()
    if key is None or (key.expires_at is not None and key.expires_at <= utcnow()):
        return None  # an expired key is as good as none (it expired with the token that added it)
    if key.user_id is not None:
        user = key.user
        if user is None or user.disabled:
            return None
        principal = access.principal_for_user(user, key)
        return Identity(principal, greeting_for_user(principal))
    deploy = session.scalars(
        select(models.DeployKey).where(models.DeployKey.public_key_id == key.id)).one_or_none()
    if deploy is None:
        return None
    principal = access.Principal(kind=access.PrincipalKind.DEPLOY_KEY, key_id=key.id, key_fingerprint=key.fingerprint,
                                 tenant_id=deploy.repo.tenant_id,
                                 tenant_name=deploy.repo.tenant.name,
                                 deploy_repo_id=deploy.repo_id, deploy_write=deploy.write)
    mode = "read-write" if deploy.write else "read-only"
    greeting = (f"Hi! You've authenticated to gitserver with a {mode} deploy key for "
                f"{deploy.repo.tenant.name}/{deploy.repo.name}; there is no shell access.")
    return Identity(principal, greeting)


def greeting_for_user(principal: access.Principal) -> str:
    return (f"Hi {principal.user_name}! You've authenticated to gitserver as "
            f"{principal.tenant_name}/{principal.user_name}; there is no shell access.")


def not_found(command: GitCommand) -> NotFound:
    """The one answer for a missing repository and for one the principal may not read."""
    return NotFound(f"repository '{command.full_name}' not found or you have no access")


def authorise(session: Session, principal: access.Principal, command: GitCommand) -> Authorised:
    """Check the principal may run ``command`` (:func:`gitserver.policy.access.authorise`: a push needs
    write, the rest read); raise :class:`NotFound` or :class:`Forbidden` worded for SSH."""
    need = access.WRITE if command.service == RECEIVE_PACK else access.READ
    try:
        granted = access.authorise(session, principal, command.tenant, command.repo, need)
    except access.RepoHidden:
        raise not_found(command) from None
    except access.PermissionTooLow as exc:
        raise Forbidden(f"you have {exc.permission} access to '{command.full_name}' and cannot push") from None
    repo = granted.repo
    return Authorised(repo_id=repo.id, tenant=command.tenant, repo=command.repo,
                      permission=granted.permission,
                      quotas=launcher.Quotas.of(session, repo) if need == access.WRITE else launcher.NO_QUOTAS)


def touch_key(session: Session, key_id: int) -> None:
    """Record that a key was used; one UPDATE, no read."""
    session.execute(update(models.PublicKey).where(models.PublicKey.id == key_id)
                    .values(last_used_at=utcnow()))
