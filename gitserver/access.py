"""Who may do what: the access policy as pure functions, plus the one query that feeds it.

:func:`repo_permission` decides from plain facts (:class:`Principal`, :class:`RepoFacts`), so
the policy is table-tested without a database. :func:`load_repo_facts` gathers those facts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.db import models

READ, WRITE, ADMIN = "read", "write", "admin"
_RANK = {None: 0, READ: 1, WRITE: 2, ADMIN: 3}


def at_least(have: str | None, need: str) -> bool:
    return _RANK[have] >= _RANK[need]


def strongest(perms: Iterable[str | None]) -> str | None:
    return max(perms, key=lambda p: _RANK[p], default=None)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is acting. Exactly one of: a user, a deploy key, a site-admin token, anonymous."""

    kind: str  # "user" | "deploy_key" | "site_admin" | "anonymous"
    user_id: int | None = None
    user_name: str = ""
    tenant_id: int | None = None
    tenant_name: str = ""
    role: str = models.ROLE_MEMBER
    key_id: int | None = None
    key_fingerprint: str = ""
    deploy_repo_id: int | None = None
    deploy_write: bool = False
    # Token scopes; None means unrestricted (SSH keys carry no scopes).
    scopes: frozenset[str] | None = None
    # When the API token used expires (None: it does not, or no token was used).
    token_expires_at: dt.datetime | None = None

    @property
    def is_site_admin(self) -> bool:
        return self.kind == "site_admin" or (self.kind == "user" and self.role == models.ROLE_SITE_ADMIN)

    def is_tenant_admin(self, tenant_id: int) -> bool:
        """Site admins, and the admins of that tenant."""
        if self.is_site_admin:
            return True
        return self.kind == "user" and self.role == models.ROLE_ADMIN and self.tenant_id == tenant_id

    @property
    def display(self) -> str:
        if self.kind == "user":
            return f"{self.tenant_name}/{self.user_name}"
        if self.kind == "deploy_key":
            return f"deploy key {self.key_fingerprint}"
        return self.kind.replace("_", " ")


ANONYMOUS = Principal(kind="anonymous")


@dataclasses.dataclass(frozen=True)
class RepoFacts:
    """What the policy needs to know about one repository and the principal's grants on it."""

    repo_id: int
    tenant_id: int
    visibility: str
    granted: str | None = None  # strongest of the principal's user and group grants


def repo_permission(principal: Principal, repo: RepoFacts) -> str | None:
    """The principal's permission on the repository: None, "read", "write" or "admin"."""
    if principal.is_site_admin:
        return ADMIN
    if principal.kind == "deploy_key":
        if principal.deploy_repo_id != repo.repo_id:
            return None
        return WRITE if principal.deploy_write else READ
    visible = READ if repo.visibility == "public" else None
    if principal.kind != "user":
        return visible
    if principal.is_tenant_admin(repo.tenant_id):
        return ADMIN
    if principal.tenant_id == repo.tenant_id:
        internal = READ if repo.visibility == "internal" else None
        return strongest([visible, internal, repo.granted])
    return visible


def load_repo_facts(session: Session, principal: Principal, repo: models.Repository) -> RepoFacts:
    """Read the principal's grants on ``repo`` (directly and through its groups)."""
    granted = None
    if principal.kind == "user" and principal.user_id is not None:
        user_grant = select(models.Grant.permission).where(
            models.Grant.repo_id == repo.id, models.Grant.user_id == principal.user_id)
        group_grants = (
            select(models.Grant.permission)
            .join(models.GroupMember, models.GroupMember.group_id == models.Grant.group_id)
            .where(models.Grant.repo_id == repo.id, models.GroupMember.user_id == principal.user_id)
        )
        granted = strongest(session.scalars(user_grant.union_all(group_grants)).all())
    return RepoFacts(repo_id=repo.id, tenant_id=repo.tenant_id, visibility=repo.visibility, granted=granted)


def permission_on(session: Session, principal: Principal, repo: models.Repository) -> str | None:
    return repo_permission(principal, load_repo_facts(session, principal, repo))


def principal_for_user(user: models.User, key: models.PublicKey | None = None,
                       scopes: frozenset[str] | None = None) -> Principal:
    return Principal(kind="user", user_id=user.id, user_name=user.name, tenant_id=user.tenant_id,
                     tenant_name=user.tenant.name, role=user.role,
                     key_id=key.id if key else None, key_fingerprint=key.fingerprint if key else "",
                     scopes=scopes)
