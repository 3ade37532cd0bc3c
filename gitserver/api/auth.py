"""Who is calling: API tokens to :class:`gitserver.policy.access.Principal`.

Tokens arrive as ``Authorization: Bearer <token>``, or as the password of HTTP Basic auth (any
user name) because git's HTTP client can only send Basic credentials. Only the SHA-256 of a
token is stored (:func:`gitserver.admin.tokens.hash_token`), so lookup is by hash.

A token is refused when it is unknown, revoked, expired, or belongs to a disabled user; all
four answer the same 401 so a caller cannot probe which tokens once existed.

With an OIDC issuer configured (:mod:`gitserver.identity.oidc`), a bearer token that is a JWT is verified
against the issuer's keys instead, and its roles give the principal (site admin, or admin of a
tenant); a JWT that fails gets 401 with the reason (expired, wrong audience, ...): unlike our
own tokens, there is nothing to probe. The process's verifier reaches the request through
:class:`OidcMiddleware` (``req.context.oidc``), set up by ``create_app``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator

import falcon
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gitserver.admin import tokens
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.identity import oidc
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, Unauthenticated, is_disk_full

log = logging.getLogger(__name__)

BEARER = "bearer"
BASIC = "basic"
# last_used_at is advisory; writing it on every request would turn each read into a write
# (and, on SQLite, serialize all API traffic on the write lock), so it is refreshed at most
# once per this interval.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)

_REFUSED = "the API token is missing, invalid, expired or revoked"


def token_from_header(value: str | None) -> str | None:
    """The token carried by an ``Authorization`` header value, or None when there is none.

    Raises :class:`Unauthenticated` for a header that is present but unusable, so a client
    with a typo in its header gets a 401 rather than being treated as anonymous.
    """
    if value is None or not value.strip():
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == BEARER and credentials:
        return credentials
    if scheme.lower() == BASIC and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthenticated("malformed Basic credentials") from exc
        _user, sep, password = decoded.partition(":")
        if sep and password:
            return password
    raise Unauthenticated("use 'Authorization: Bearer <token>' (or Basic with the token as password)")


Touch = Callable[[int, dt.datetime], None]


def principal_for_token(session: Session, secret: str, touch: Touch | None = None) -> access.Principal:
    """Resolve a token secret to its principal or raise :class:`Unauthenticated`.

    ``touch(token_id, now)``, when given, is told to update last_used_at instead of doing it
    in ``session`` (see :func:`authenticated`)."""
    token = session.scalar(select(models.ApiToken).where(
        models.ApiToken.token_hash == tokens.hash_token(secret)))
    now = utcnow()
    if token is None or not token.stands(now):
        raise Unauthenticated(_REFUSED)
    scopes = frozenset(s for s in token.scopes.split(",") if s)
    if token.site_admin:
        principal = access.Principal(kind=access.PrincipalKind.SITE_ADMIN, user_name=token.name or "site admin",
                                     scopes=scopes, token_expires_at=token.expires_at, token_id=token.id)
    else:
        user = token.user
        if user is None or user.disabled:
            raise Unauthenticated(_REFUSED)
        principal = dataclasses.replace(access.principal_for_user(user, scopes=scopes),
                                        token_expires_at=token.expires_at, token_id=token.id)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        if touch is not None:
            touch(token.id, now)
        else:
            session.execute(update(models.ApiToken).where(models.ApiToken.id == token.id)
                            .values(last_used_at=now))
    return principal


def touch_token(sessions: sessionmaker[Session], token_id: int, now: dt.datetime) -> None:
    """Record a token's use in its own transaction. Advisory: a full disk must not turn a read
    that succeeded into an error, so that is logged and forgotten."""
    try:
        with transaction(sessions) as session:
            session.execute(update(models.ApiToken).where(models.ApiToken.id == token_id)
                            .values(last_used_at=now))
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        log.warning("could not record the use of API token %s: disk full", token_id)


class OidcMiddleware:
    """Hands the process's :class:`~gitserver.identity.oidc.OidcVerifier` (or None) to every request."""

    def __init__(self, verifier: oidc.OidcVerifier | None) -> None:
        self.verifier = verifier

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.oidc = self.verifier


class OperatorMiddleware:
    """Makes every request of this app the server's operator (``gitserver`` run on the data
    dir, which could write the database directly anyway): the CLI's in-process API, never one
    that listens. ``req.context`` is set by the server alone, so no request can claim it."""

    def __init__(self, operator: access.Principal) -> None:
        self.operator = operator

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.operator = self.operator


def principal_for_jwt(session: Session, verifier: oidc.OidcVerifier, token: str) -> access.Principal:
    """The principal of a verified OIDC token, from its roles (``oidc_role_map``): 403 when
    none of them maps to a permission here."""
    claims = verifier.verify(token)
    grant = oidc.grant_for_roles(oidc.token_roles(claims), verifier.role_map)
    who = str(claims.get("preferred_username") or claims.get("azp") or claims.get("sub") or "oidc")[:100]
    # verify() requires exp and checks it is a number in range: the principal (and every token
    # minted for it) expires with the OIDC token, never later.
    expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    if grant.site_admin:
        return access.Principal(kind=access.PrincipalKind.SITE_ADMIN, user_name=f"oidc:{who}", token_expires_at=expires)
    for tenant_name in grant.tenant_admin:
        tenant = session.scalar(select(models.Tenant).where(models.Tenant.name == tenant_name))
        if tenant is not None:
            return access.Principal(kind=access.PrincipalKind.USER, user_name=f"oidc:{who}", tenant_id=tenant.id,
                                    tenant_name=tenant.name, role=models.ROLE_ADMIN, token_expires_at=expires)
    if grant.tenant_admin:
        raise Forbidden(f"the OIDC token's roles make it an admin of tenant {grant.tenant_admin[0]!r}, "
                        "which does not exist")
    raise Forbidden("the OIDC token is valid, but none of its roles maps to a permission on this server "
                    "(see oidc_role_map)")


def principal_for_secret(req: falcon.Request, session: Session, secret: str,
                         touch: Touch | None = None) -> access.Principal:
    """An OIDC JWT (when an issuer is configured) or one of our own API tokens."""
    verifier = getattr(req.context, "oidc", None)
    if verifier is not None and oidc.looks_like_jwt(secret):
        return principal_for_jwt(session, verifier, secret)
    return principal_for_token(session, secret, touch)


def authenticate(req: falcon.Request, session: Session, touch: Touch | None = None) -> access.Principal:
    """The caller's principal; 401 without a token or with a bad one."""
    operator = getattr(req.context, "operator", None)
    if operator is not None:
        return operator
    secret = token_from_header(req.get_header("Authorization"))
    if secret is None:
        raise Unauthenticated("this endpoint needs an API token: 'Authorization: Bearer <token>'")
    return principal_for_secret(req, session, secret, touch)


def optional_principal(req: falcon.Request, session: Session, touch: Touch | None = None) -> access.Principal:
    """Like :func:`authenticate`, but ANONYMOUS when no credentials are sent (public reads).
    Credentials that are sent must still be valid."""
    operator = getattr(req.context, "operator", None)
    if operator is not None:
        return operator
    secret = token_from_header(req.get_header("Authorization"))
    if secret is None:
        return access.ANONYMOUS
    return principal_for_secret(req, session, secret, touch)


@contextlib.contextmanager
def authenticated(sessions: sessionmaker[Session], req: falcon.Request, *,
                  optional: bool = False) -> Iterator[tuple[Session, access.Principal]]:
    """One request's transaction and its caller: ``with authenticated(ctx.runtime.sessions,
    req) as (session, principal):``. Commits when the block succeeds, rolls back otherwise.
    With ``optional=True`` a request without credentials is ANONYMOUS instead of a 401."""
    # last_used_at is written after the request's own transaction, in another one: a read
    # must not fail because that advisory write cannot be stored (disk full).
    touched: list[tuple[int, dt.datetime]] = []

    def touch(token_id: int, now: dt.datetime) -> None:
        touched.append((token_id, now))

    with transaction(sessions) as session:
        principal = (optional_principal(req, session, touch) if optional
                     else authenticate(req, session, touch))
        yield session, principal
    for token_id, now in touched:
        touch_token(sessions, token_id, now)
