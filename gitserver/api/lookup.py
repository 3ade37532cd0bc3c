"""Finding the tenant or repository a URL names, as the caller is allowed to see it.

The tenant wall of docs/architecture.md (Invariants): whatever a principal may not see answers exactly like
something that does not exist (same status, same message), so the API cannot be used to probe
for other tenants' names. Only once an object is visible may the answer become a 403
("you can see it but not do this").
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver import access
from gitserver.api.auth import require_scope
from gitserver.db import models
from gitserver.errors import Forbidden, NotFound
from gitserver.names import name_problem

_GIT_SUFFIX = ".git"


def tenant_not_found(name: str) -> NotFound:
    return NotFound(f"tenant {name[:100]!r} not found")


def repo_not_found(tenant: str, repo: str) -> NotFound:
    return NotFound(f"repository {tenant[:100]}/{repo[:100]} not found")


def can_see_tenant(principal: access.Principal, tenant_id: int) -> bool:
    """Site admins see every tenant; users and deploy keys only their own."""
    if principal.is_site_admin:
        return True
    return principal.kind in ("user", "deploy_key") and principal.tenant_id == tenant_id


def visible_tenant(session: Session, principal: access.Principal, tenant: str, *,
                   admin: bool = False) -> models.Tenant:
    """The tenant named ``tenant`` if the principal may see it, else 404 (as if missing).

    With ``admin=True`` the principal must also administer it (403 otherwise) and hold a
    token with the ``admin`` scope.
    """
    # A name that could never have been created is not looked up at all (that also keeps NUL
    # bytes and huge strings from URLs away from the database).
    row = None if name_problem(tenant) else session.scalar(
        select(models.Tenant).where(models.Tenant.name == tenant))
    if row is None or not can_see_tenant(principal, row.id):
        raise tenant_not_found(tenant)
    if admin:
        if not principal.is_tenant_admin(row.id):
            raise Forbidden(f"only the admins of tenant {tenant!r} may do this")
        require_scope(principal, access.ADMIN)
    return row


def find_tenant(session: Session, tenant: str) -> models.Tenant | None:
    """The tenant row by name, without any access check."""
    if name_problem(tenant):
        return None
    return session.scalar(select(models.Tenant).where(models.Tenant.name == tenant))


def find_repo(session: Session, tenant: str, repo: str) -> models.Repository | None:
    """The repository row by tenant and repository name (a trailing ``.git`` is accepted:
    stored names never end in it), without any access check."""
    if repo.endswith(_GIT_SUFFIX):
        repo = repo[: -len(_GIT_SUFFIX)]
    if name_problem(tenant) or name_problem(repo):
        return None
    return session.scalar(
        select(models.Repository)
        .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
        .where(models.Tenant.name == tenant, models.Repository.name == repo))


def visible_repo(session: Session, principal: access.Principal, tenant: str, repo: str,
                 need: str = access.READ) -> models.Repository:
    """The repository if the principal can read it (404 exactly like a missing one otherwise),
    and holds ``need`` on it (403 otherwise) with a token scope covering ``need``."""
    row = find_repo(session, tenant, repo)
    if row is None:
        raise repo_not_found(tenant, repo.removesuffix(_GIT_SUFFIX))
    permission = access.permission_on(session, principal, row)
    if permission is None:
        raise repo_not_found(tenant, row.name)
    if not access.at_least(permission, need):
        raise Forbidden(f"you have {permission} access to {tenant}/{row.name}; this needs {need}")
    require_scope(principal, need)
    return row
