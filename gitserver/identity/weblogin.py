"""Passwordless sign-in to the web console: one-time links and the browser sessions they open.

``ssh git@host login`` calls :func:`create_link`: the SSH key already proved who the user is,
so the link it prints is as good as that key for :data:`LINK_LIFETIME`, once. The console's
GET of the link calls :func:`redeem` (which marks it used in the same statement that checks
it, so two browsers racing for one link cannot both win) and :func:`open_session`. Only
SHA-256 hashes of secrets are stored: a copy of the database opens no browser session.

Services in the caller's session, never committed (the caller owns the transaction).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow

LINK_LIFETIME = dt.timedelta(minutes=5)
SESSION_LIFETIME = dt.timedelta(hours=12)
# The longest ID token kept (Keycloak's are 1-2 KiB; one carrying hundreds of groups is not
# worth a row that large: its logout then goes without id_token_hint).
MAX_ID_TOKEN = 16 * 1024
_SECRET_BYTES = 32
# A secret is token_urlsafe(32): 43 characters of [A-Za-z0-9_-]. Anything else is not looked up.
SECRET_LENGTH = 43
_SECRET_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# Where the console redeems a link (docs/contract.md); "-" can start no tenant name, so no
# repository page can ever shadow it.
LOGIN_PATH = "/ui/-/login/"


def login_url(http_base_url: str, secret: str) -> str:
    """The URL ``ssh git@host login`` prints."""
    return http_base_url.rstrip("/") + LOGIN_PATH + secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def well_formed(secret: str) -> bool:
    """Whether ``secret`` could be one we made (keeps junk away from the database)."""
    return len(secret) == SECRET_LENGTH and set(secret) <= _SECRET_ALPHABET


def create_link(session: Session, user: models.User, now: dt.datetime | None = None) -> str:
    """A new one-time sign-in secret for ``user``, valid for :data:`LINK_LIFETIME`."""
    now = now or utcnow()
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    session.add(models.ConsoleLogin(secret_hash=hash_secret(secret), user_id=user.id, created_at=now,
                                    expires_at=now + LINK_LIFETIME))
    session.flush()
    return secret


def redeem(session: Session, secret: str, now: dt.datetime | None = None) -> models.User | None:
    """The user of an unused, unexpired link, marking it used; None for any other secret
    (unknown, used, expired, or its user disabled since)."""
    if not well_formed(secret):
        return None
    now = now or utcnow()
    # One conditional UPDATE: of two concurrent redeemers exactly one sees a row changed.
    claimed = session.execute(
        update(models.ConsoleLogin)
        .where(models.ConsoleLogin.secret_hash == hash_secret(secret),
               models.ConsoleLogin.used_at.is_(None), models.ConsoleLogin.expires_at > now)
        .values(used_at=now).returning(models.ConsoleLogin.user_id)).scalar()
    if claimed is None:
        return None
    user = session.get(models.User, claimed)
    return None if user is None or user.disabled else user


@dataclasses.dataclass(frozen=True)
class Opened:
    """A new browser session: the cookie's secret (shown once) and its row."""

    secret: str
    row: models.ConsoleSession


def open_session(session: Session, user: models.User, now: dt.datetime | None = None,
                 id_token: str | None = None) -> Opened:
    """A session for ``user``; ``id_token`` is a single sign-on's (kept for the logout at the
    issuer unless longer than :data:`MAX_ID_TOKEN`, when that logout goes without the hint)."""
    now = now or utcnow()
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    row = models.ConsoleSession(secret_hash=hash_secret(secret), user_id=user.id,
                                csrf_token=secrets.token_urlsafe(_SECRET_BYTES), created_at=now,
                                expires_at=now + SESSION_LIFETIME,
                                id_token=id_token if id_token and len(id_token) <= MAX_ID_TOKEN else None)
    session.add(row)
    session.flush()
    return Opened(secret, row)


def find_session(session: Session, secret: str, now: dt.datetime | None = None) -> models.ConsoleSession | None:
    """The live session of a cookie: not ended, not expired, its user not disabled."""
    if not well_formed(secret):
        return None
    now = now or utcnow()
    row = session.scalar(select(models.ConsoleSession)
                         .where(models.ConsoleSession.secret_hash == hash_secret(secret)))
    if row is None or row.ended_at is not None or row.expires_at <= now or row.user.disabled:
        return None
    return row


def end_session(row: models.ConsoleSession, now: dt.datetime | None = None) -> None:
    """Sign-out: the cookie stops working at once, on every replica."""
    row.ended_at = now or utcnow()


def csrf_matches(row: models.ConsoleSession, given: str | None) -> bool:
    """Whether a form's token is this session's (compared in constant time)."""
    return bool(given) and hmac.compare_digest(row.csrf_token.encode(), (given or "").encode())
