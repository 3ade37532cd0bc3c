"""A user's new API token as a principal may mint it: the one way the API's ``POST …/tokens``
and the console's form create tokens, so both answer the same input the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from gitserver.admin import rules, tokens
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput


def mint_token(session: Session, principal: access.Principal, user: models.User, *, name: str = "",
               scopes: Iterable[str] | None = None, expires: str | None = None) -> tuple[models.ApiToken, str]:
    """A token of ``user`` with the ``scopes`` asked for (by default what the principal's own
    token has, no more), expiring at the RFC 3339 time ``expires`` (by default never, or with
    the principal's token); never more scopes, nor a later expiry, than the principal's token
    has. Returns the row and the secret, shown once."""
    default = [s for s in tokens.TOKEN_SCOPES if access.scope_covers(principal.scopes, s)]
    requested = set(default if scopes is None else scopes)
    chosen = tuple(s for s in tokens.TOKEN_SCOPES if s in requested)
    if not chosen:
        raise InvalidInput("scopes must not be empty", field="scopes")
    rules.check_scopes_grantable(principal.scopes, chosen)
    expires_at = rules.check_expiry_grantable(
        principal.token_expires_at, tokens.parse_expiry(expires, "expires_at") if expires else None)
    return tokens.create_token(session, user=user, name=name, scopes=chosen, expires_at=expires_at)
