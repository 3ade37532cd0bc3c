"""The rules the API applies to the acting principal, pure and table-tested without a
database: who may give a role, manage a user, grant a permission, mint a token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from gitserver.admin import grants, tokens, users
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import Forbidden


def check_role_assignable(principal: access.Principal, role: str) -> None:
    """Tenant admins may make members and admins; only site admins make site admins."""
    users.validate_role(role)
    if role == models.ROLE_SITE_ADMIN and not principal.is_site_admin:
        raise Forbidden("only site admins can give the site-admin role", field="role")


def check_user_manageable(principal: access.Principal, user_tenant_id: int, user_role: str) -> None:
    """Admins of the user's tenant manage its users, except site admins, whom only site admins
    manage (else a tenant admin could disable, or take over, someone above them)."""
    if not principal.is_tenant_admin(user_tenant_id):
        raise Forbidden("only the admins of the user's tenant may do this")
    if user_role == models.ROLE_SITE_ADMIN and not principal.is_site_admin:
        raise Forbidden("only site admins can manage a site admin")


def check_self_or_manager(principal: access.Principal, user_id: int, user_tenant_id: int,
                          user_role: str) -> None:
    """Users manage their own keys and tokens; admins manage those of users they manage."""
    if principal.kind == "user" and principal.user_id == user_id:
        return
    check_user_manageable(principal, user_tenant_id, user_role)


def check_grantable(held: str | None, requested: str) -> None:
    """Nobody grants more than they hold on the repository."""
    grants.validate_permission(requested)
    if not access.at_least(held, requested):
        raise Forbidden(f"you hold {held or 'no'} access to this repository and cannot grant {requested}",
                        field="permission")


def check_expiry_grantable(held: dt.datetime | None,
                           requested: dt.datetime | None) -> dt.datetime | None:
    """The expiry of a token minted by a token that expires at ``held`` (None: never).

    A token cannot mint one that outlives it (else a short-lived token, leaked or handed out
    for a task, turns into a permanent one); by default the new token expires with it."""
    if held is None:
        return requested
    if requested is None:
        return held
    if requested > held:
        raise Forbidden(f"the token used expires at {held.isoformat()}; it cannot create a token "
                        "that outlives it", field="expires_at")
    return requested


def check_scopes_grantable(held: frozenset[str] | None, requested: Iterable[str]) -> None:
    """A token cannot mint a token with scopes it does not have itself."""
    missing = sorted(s for s in set(requested) if s in tokens.TOKEN_SCOPES and not access.scope_covers(held, s))
    if missing:
        raise Forbidden(f"the token used lacks the scope(s) {', '.join(missing)} it tries to give",
                        field="scopes")
