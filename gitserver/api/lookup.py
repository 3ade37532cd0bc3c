"""Finding the tenant or repository a URL names, as the caller is allowed to see it.

The tenant wall of docs/architecture.md (Invariants): whatever a principal may not see answers exactly like
something that does not exist (same status, same message), so the API cannot be used to probe
for other tenants' names. Only once an object is visible may the answer become a 403
("you can see it but not do this").
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, NotFound
from gitserver.policy.names import name_problem


def tenant_not_found(name: str) -> NotFound:
    return NotFound(f"tenant {name[:100]!r} not found")


def can_see_tenant(principal: access.Principal, tenant_id: int) -> bool:
    """Site admins see every tenant; users and deploy keys only their own."""
    if principal.is_site_admin:
        return True
    members = (access.PrincipalKind.USER, access.PrincipalKind.DEPLOY_KEY)
    return principal.kind in members and principal.tenant_id == tenant_id


def visible_tenant(session: Session, principal: access.Principal, tenant: str, *,
                   admin: bool = False) -> models.Tenant:
    """The tenant named ``tenant`` if the principal may see it, else 404 (as if missing).

    With ``admin=True`` the principal must also administer it (403 otherwise) and hold a
    token with the ``admin`` scope.
    """
    row = find_tenant(session, tenant)
    if row is None or not can_see_tenant(principal, row.id):
        raise tenant_not_found(tenant)
    if admin:
        if not principal.is_tenant_admin(row.id):
            raise Forbidden(f"only the admins of tenant {tenant!r} may do this")
        access.require_scope(principal, access.ADMIN)
    return row


def find_tenant(session: Session, tenant: str) -> models.Tenant | None:
    """The tenant row by name, without any access check. A name that could never have been
    created is not looked up at all (that also keeps NUL bytes and huge strings from URLs away
    from the database)."""
    if name_problem(tenant):
        return None
    return session.scalar(select(models.Tenant).where(models.Tenant.name == tenant))


def visible_repo(session: Session, principal: access.Principal, tenant: str, repo: str,
                 need: str = access.READ) -> models.Repository:
    """The repository if the principal can read it (404 exactly like a missing one otherwise),
    and holds ``need`` on it (403 otherwise) with a token scope covering ``need``: the
    :func:`gitserver.policy.access.authorise` decision, whose errors are already the API's answers."""
    return access.authorise(session, principal, tenant, repo, need).repo
