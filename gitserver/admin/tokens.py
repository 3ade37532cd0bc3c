"""API tokens: created with a secret shown once and stored as a hash, revoked at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput

TOKEN_PREFIX = "gst_"
MAX_NAME = 200  # api_tokens.name


TOKEN_SCOPES = (access.READ, access.WRITE, access.ADMIN)  # ordered: each includes the ones before


# RFC 3339 date-time, the "date-time" format of JSON Schema: the zone is required, so that
# "2030-01-01T00:00" never silently means a different instant on a different server.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def parse_expiry(value: str, field: str) -> dt.datetime:
    """An RFC 3339 date-time with a zone, in the future, as an aware UTC datetime."""
    problem = f"{field} must be an RFC 3339 date-time with a zone, like 2030-01-01T00:00:00Z"
    if not _RFC3339.fullmatch(value):
        raise InvalidInput(problem, field=field)
    try:
        # fromisoformat takes at most 6 fraction digits; the extra precision means nothing here.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z"))
        # Normalise now: a far-future time in a negative zone overflows the datetime range.
        when = dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(problem, field=field) from exc
    if when <= utcnow():
        raise InvalidInput(f"{field} must be in the future", field=field)
    return when


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, *, user: models.User | None = None, site_admin: bool = False,
                 name: str = "", scopes: tuple[str, ...] = TOKEN_SCOPES,
                 expires_at: dt.datetime | None = None) -> tuple[models.ApiToken, str]:
    """Create a token; returns the row and the secret, which is never stored."""
    if user is None and not site_admin:
        raise InvalidInput("a token belongs to a user or is a site-admin token")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be a string of at most {MAX_NAME} characters", field="name")
    bad = [s for s in scopes if s not in TOKEN_SCOPES]
    if bad or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {', '.join(TOKEN_SCOPES)}", field="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = models.ApiToken(user_id=user.id if user else None, site_admin=site_admin, name=name,
                          token_hash=hash_token(secret), scopes=",".join(scopes), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, secret


def get_token(session: Session, user: models.User, token_id: int) -> models.ApiToken:
    return base.one_of(session, tokens_query(user), token_id,
                       f"token {token_id} of {user.tenant.name}/{user.name} not found")


def revoke_token(session: Session, token: models.ApiToken) -> None:
    """Revoke at once (the auth check reads ``revoked_at`` on every request); idempotent, and
    the first revocation time is kept."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()


def tokens_query(user: models.User) -> Select[models.ApiToken]:
    return select(models.ApiToken).where(models.ApiToken.user_id == user.id)


def token_scopes(token: models.ApiToken) -> list[str]:
    return [s for s in token.scopes.split(",") if s]
