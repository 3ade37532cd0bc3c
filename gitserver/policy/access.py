"""Who may do what: the access policy as pure functions, and the one access decision every
transport asks.

:func:`repo_permission` decides from plain facts (:class:`Principal`, :class:`RepoFacts`), so
the policy is table-tested without a database. :func:`load_repo_facts` gathers those facts.

:func:`authorise` is the decision SSH, the REST API, smart HTTP and Repour all take: find the
repository by name, compute the principal's permission, and either hand back the repository or
raise :class:`RepoHidden` (missing, or not readable: the two must look the same, so nobody learns
that another tenant's repository exists) or a :class:`Refused` (readable, but the permission or
the token's scope falls short of what is needed, named in the message). Each transport turns
those into its own answer (an SSH message, a 404/403, Repour's error body).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.identity.certs import CertificateUse
from gitserver.policy.errors import Forbidden, NotFound
from gitserver.policy.names import GIT_SUFFIX, name_problem

READ, WRITE, ADMIN = "read", "write", "admin"
_RANK = {None: 0, READ: 1, WRITE: 2, ADMIN: 3}


def at_least(have: str | None, need: str) -> bool:
    return _RANK[have] >= _RANK[need]


def scope_covers(held: Iterable[str] | None, need: str) -> bool:
    """Whether token scopes ``held`` cover ``need``. Scopes are ordered like permissions
    (``admin`` includes ``write`` includes ``read``); None (SSH keys, anonymous callers)
    restricts nothing."""
    if held is None:
        return True
    return any(s in (READ, WRITE, ADMIN) and at_least(s, need) for s in held)


def strongest(perms: Iterable[str | None]) -> str | None:
    return max(perms, key=lambda p: _RANK[p], default=None)


class PrincipalKind(enum.StrEnum):
    """What kind of caller a :class:`Principal` is (a StrEnum: logs and payloads show the string)."""

    USER = "user"
    DEPLOY_KEY = "deploy_key"
    SITE_ADMIN = "site_admin"  # a site-admin API token, or an OIDC site admin
    ANONYMOUS = "anonymous"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is acting. Exactly one of: a user, a deploy key, a site-admin token, anonymous."""

    kind: PrincipalKind
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
    # The API token used (None: none was), so what is derived from it can die with it.
    token_id: int | None = None
    # The SSH certificate the user logged in with (None: a plain key, or not SSH).
    certificate: CertificateUse | None = None

    @property
    def is_site_admin(self) -> bool:
        return self.kind == PrincipalKind.SITE_ADMIN or (
            self.kind == PrincipalKind.USER and self.role == models.ROLE_SITE_ADMIN)

    def is_tenant_admin(self, tenant_id: int) -> bool:
        """Site admins, and the admins of that tenant."""
        if self.is_site_admin:
            return True
        return self.kind == PrincipalKind.USER and self.role == models.ROLE_ADMIN and self.tenant_id == tenant_id

    @property
    def display(self) -> str:
        if self.kind == PrincipalKind.USER:
            return f"{self.tenant_name}/{self.user_name}"
        if self.kind == PrincipalKind.DEPLOY_KEY:
            return f"deploy key {self.key_fingerprint}"
        return self.kind.replace("_", " ")


ANONYMOUS = Principal(kind=PrincipalKind.ANONYMOUS)


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
    if principal.kind == PrincipalKind.DEPLOY_KEY:
        if principal.deploy_repo_id != repo.repo_id:
            return None
        return WRITE if principal.deploy_write else READ
    visible = READ if repo.visibility == "public" else None
    if principal.kind != PrincipalKind.USER:
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
    if principal.kind == PrincipalKind.USER and principal.user_id is not None:
        user_grant = select(models.Grant.permission).where(
            models.Grant.repo_id == repo.id, models.Grant.user_id == principal.user_id)
        group_grants = (
            select(models.Grant.permission)
            .join(models.GroupMember, models.GroupMember.group_id == models.Grant.group_id)
            .where(models.Grant.repo_id == repo.id, models.GroupMember.user_id == principal.user_id)
        )
        granted = strongest(session.scalars(user_grant.union_all(group_grants)).all())
    return RepoFacts(repo_id=repo.id, tenant_id=repo.tenant_id, visibility=repo.visibility, granted=granted)


def readable_repos(principal: Principal, tenant_id: int) -> Select[models.Repository]:
    """The tenant's repositories the principal can read, as one query: the SQL form of
    :func:`repo_permission` for listing (tests hold the two to the same answers)."""
    query = select(models.Repository).where(models.Repository.tenant_id == tenant_id)
    if principal.is_tenant_admin(tenant_id):
        return query
    if principal.kind == PrincipalKind.DEPLOY_KEY:
        return query.where(models.Repository.id == principal.deploy_repo_id)
    readable: list[ColumnElement[bool]] = [models.Repository.visibility == "public"]
    if principal.kind == PrincipalKind.USER and principal.tenant_id == tenant_id:
        user_grants = select(models.Grant.repo_id).where(models.Grant.user_id == principal.user_id)
        group_grants = (select(models.Grant.repo_id)
                        .join(models.GroupMember, models.GroupMember.group_id == models.Grant.group_id)
                        .where(models.GroupMember.user_id == principal.user_id))
        readable += [models.Repository.visibility == "internal",
                     models.Repository.id.in_(user_grants),
                     models.Repository.id.in_(group_grants)]
    return query.where(or_(*readable))


def permission_on(session: Session, principal: Principal, repo: models.Repository) -> str | None:
    return repo_permission(principal, load_repo_facts(session, principal, repo))


def principal_for_user(user: models.User, key: models.PublicKey | None = None,
                       scopes: frozenset[str] | None = None) -> Principal:
    return Principal(kind=PrincipalKind.USER, user_id=user.id, user_name=user.name, tenant_id=user.tenant_id,
                     tenant_name=user.tenant.name, role=user.role,
                     key_id=key.id if key else None, key_fingerprint=key.fingerprint if key else "",
                     scopes=scopes)


# --- the one access decision ------------------------------------------------------------------

class RepoHidden(NotFound):
    """The repository does not exist, or the principal may not read it: one answer for both."""

    def __init__(self, tenant: str, repo: str) -> None:
        super().__init__(f"repository {tenant[:100]}/{repo[:100]} not found")


class Refused(Forbidden):
    """The principal can read the repository but may not do what it asked."""

    def __init__(self, message: str, need: str) -> None:
        super().__init__(message)
        self.need = need


class PermissionTooLow(Refused):
    """Its permission on the repository is below ``need``."""

    def __init__(self, full_name: str, permission: str, need: str) -> None:
        super().__init__(f"you have {permission} access to {full_name}; this needs {need}", need)
        self.permission = permission


class ScopeMissing(Refused):
    """The API token used was not created with a scope covering ``need``."""

    def __init__(self, need: str) -> None:
        super().__init__(f"this token lacks the '{need}' scope", need)


@dataclasses.dataclass(frozen=True)
class Granted:
    """What :func:`authorise` allowed: the repository row and the principal's permission on it."""

    repo: models.Repository
    permission: str


def require_scope(principal: Principal, need: str) -> None:
    """:class:`ScopeMissing` when the principal's token does not cover ``need`` (``read`` for
    reads, ``write`` for changing repository content or running work, ``admin`` for managing
    tenants, users, keys, tokens, repositories and grants)."""
    if not scope_covers(principal.scopes, need):
        raise ScopeMissing(need)


def find_repo(session: Session, tenant: str, repo: str) -> models.Repository | None:
    """The repository row by tenant and repository name, without any access check. A trailing
    ``.git`` is accepted (stored names never end in it); a name that could never have been
    created is not looked up at all (that keeps NUL bytes and huge strings away from the
    database)."""
    repo = repo.removesuffix(GIT_SUFFIX)
    if name_problem(tenant) or name_problem(repo):
        return None
    return session.scalar(
        select(models.Repository)
        .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
        .where(models.Tenant.name == tenant, models.Repository.name == repo))


def require(session: Session, principal: Principal, repo: models.Repository, need: str) -> str:
    """The principal's permission on ``repo`` when it covers ``need``; raises
    :class:`RepoHidden` when it cannot read the repository, :class:`PermissionTooLow` or
    :class:`ScopeMissing` when it can read it but not do ``need``."""
    permission = permission_on(session, principal, repo)
    if permission is None:
        raise RepoHidden(repo.tenant.name, repo.name)
    if not at_least(permission, need):
        raise PermissionTooLow(f"{repo.tenant.name}/{repo.name}", permission, need)
    require_scope(principal, need)
    return permission


def allows(session: Session, principal: Principal, repo: models.Repository, need: str) -> bool:
    """:func:`require` as a yes/no, for filters that skip what the principal may not touch."""
    try:
        require(session, principal, repo, need)
    except (RepoHidden, Refused):
        return False
    return True


def authorise(session: Session, principal: Principal, tenant: str, repo: str, need: str) -> Granted:
    """The repository ``tenant/repo`` names, when ``principal`` may do ``need`` (READ, WRITE or
    ADMIN) on it. Raises :class:`RepoHidden` when it is missing or unreadable (named as asked,
    without a trailing ``.git``), :class:`PermissionTooLow` or :class:`ScopeMissing` otherwise."""
    row = find_repo(session, tenant, repo)
    if row is None:
        raise RepoHidden(tenant, repo.removesuffix(GIT_SUFFIX))
    return Granted(repo=row, permission=require(session, principal, row, need))
