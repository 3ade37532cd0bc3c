"""OIDC bearer tokens (PNC's Keycloak service accounts) beside gitserver's own API tokens.

PNC authenticates to Repour and Reqour with RS256 JWTs from its Keycloak realm. With
``oidc_issuer`` and ``oidc_audience`` set, a bearer token that is a JWT is verified here:

* the signing key comes from the issuer's JWKS, whose address comes from the issuer's discovery
  document (``<issuer>/.well-known/openid-configuration``); PyJWT checks the signature, ``iss``,
  ``aud``, ``exp`` and ``nbf`` (never by hand);
* keys are cached; a token whose ``kid`` is not in the cache makes one refresh of the JWKS (the
  issuer rotated its keys), at most once per :data:`MIN_REFRESH_SECONDS` so that a stream of
  made-up ``kid`` values cannot turn into a stream of requests to the issuer;
* the token's roles (Keycloak's ``realm_access.roles``, and ``resource_access.<client>.roles``
  as ``<client>:<role>``) map to gitserver permissions through ``oidc_role_map``
  (:func:`parse_role_map`, :func:`grant_for_roles`).

The issuer URL is operator configuration, not network input: it is fetched without the
address rules that guard webhooks and callbacks (:mod:`gitserver.net.netguard`), like the callback
token endpoint (``oidc_token_url``). It must be ``https``, or ``http`` only when
``allow_private_networks`` is on (a test issuer on loopback). The JWKS address must be on the
issuer's own host, so a tampered discovery document cannot point key fetches elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt

from gitserver.policy.errors import ConfigError, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256",)
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Clock skew tolerated on exp/nbf/iat between the issuer and this server.
LEEWAY_SECONDS = 30
# An unknown kid refreshes the JWKS at most this often.
MIN_REFRESH_SECONDS = 2.0
# Keys (and the discovery document) are fetched again after this long even without a miss.
KEYS_TTL_SECONDS = 3600.0
MAX_DOCUMENT_BYTES = 1024 * 1024
CRIT_HEADER = "crit"
# RFC 7519 NumericDate claims; the largest is 9999-12-31T23:59:59Z (what datetime can hold).
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253402300799
SITE_ADMIN = "site-admin"
TENANT_ADMIN_PREFIX = "tenant-admin:"

Fetch = Callable[[str, float], Any]


# --- role mapping (pure) -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Grant:
    """What a token's roles give: site admin, or admin of these tenants."""

    site_admin: bool = False
    tenant_admin: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.site_admin and not self.tenant_admin


def parse_role_map(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``role=target`` entries (``target``: ``site-admin`` or ``tenant-admin:<tenant>``) as
    role → targets. ConfigError names the entry that is wrong."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        role, sep, target = entry.partition("=")
        role, target = role.strip(), target.strip()
        if not sep or not role or not target:
            raise ConfigError(f"setting oidc_role_map: expected 'role=target', got {entry!r}")
        if target != SITE_ADMIN and not (target.startswith(TENANT_ADMIN_PREFIX)
                                         and target[len(TENANT_ADMIN_PREFIX):]):
            raise ConfigError(f"setting oidc_role_map: target of {role!r} must be '{SITE_ADMIN}' or "
                              f"'{TENANT_ADMIN_PREFIX}<tenant>', got {target!r}")
        out[role] = (*out.get(role, ()), target)
    return out


def token_roles(claims: Mapping[str, Any]) -> set[str]:
    """Keycloak's roles in a token: realm roles by name, client roles as ``<client>:<role>``."""
    roles: set[str] = set()
    realm = claims.get("realm_access")
    if isinstance(realm, Mapping):
        roles.update(r for r in realm.get("roles") or () if isinstance(r, str))
    resources = claims.get("resource_access")
    if isinstance(resources, Mapping):
        for client, access in resources.items():
            if isinstance(access, Mapping):
                roles.update(f"{client}:{r}" for r in access.get("roles") or () if isinstance(r, str))
    return roles


def grant_for_roles(roles: Iterable[str], role_map: Mapping[str, tuple[str, ...]]) -> Grant:
    targets = {t for role in roles for t in role_map.get(role, ())}
    tenants = sorted(t[len(TENANT_ADMIN_PREFIX):] for t in targets if t.startswith(TENANT_ADMIN_PREFIX))
    return Grant(site_admin=SITE_ADMIN in targets, tenant_admin=tuple(tenants))


def looks_like_jwt(secret: str) -> bool:
    """A compact JWS: three base64url parts (gitserver's own tokens contain no dot)."""
    parts = secret.split(".")
    return len(parts) == 3 and all(parts[:2])


def check_issuer_url(issuer: str, allow_http: bool) -> None:
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"setting oidc_issuer: expected an https URL, got {issuer!r}")
    if parts.scheme == "http" and not allow_http:
        raise ConfigError("setting oidc_issuer: http issuers are only allowed with allow_private_networks "
                          "(use https)")


# --- verification ----------------------------------------------------------------------------

def fetch_json(url: str, timeout: float) -> Any:
    """GET a JSON document from the issuer (operator configuration: see the module docstring)."""
    import requests

    resp = requests.get(url, timeout=timeout, allow_redirects=False, stream=True,
                        headers={"Accept": "application/json"})
    try:
        if resp.status_code != 200:
            raise OSError(f"{url} answered {resp.status_code}")
        body = resp.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
    finally:
        resp.close()
    if len(body) > MAX_DOCUMENT_BYTES:
        raise OSError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(body)


def _header(token: str) -> dict[str, Any]:
    """The token's checked header: RS256, and no critical extensions (we implement none)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        # DecodeError for a malformed token; PyJWT's other header checks (a kid that is not a
        # string, an unknown crit) raise InvalidTokenError itself.
        raise Unauthenticated(f"the bearer token is not a valid JWT: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise Unauthenticated(f"the OIDC token is signed with {header.get('alg')!r}; "
                              f"only {', '.join(ALGORITHMS)} is accepted")
    if CRIT_HEADER in header:
        # RFC 7515 4.1.11: a recipient that does not understand a critical extension refuses.
        raise Unauthenticated("the OIDC token names critical header extensions (crit); none is supported")
    return header


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """exp, nbf and iat are JSON numbers in range. PyJWT accepts "4102444800" (it calls int()),
    and a string exp would then be read as no expiry at all by whoever looks at the claims."""
    for name in NUMERIC_DATE_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_NUMERIC_DATE:
            raise Unauthenticated(f"the OIDC token's {name!r} claim must be a number of seconds since "
                                  f"1970, got {str(value)[:40]!r}")


@dataclasses.dataclass
class _Keys:
    by_kid: dict[str, jwt.PyJWK]
    fetched: float


class OidcVerifier:
    """Verifies bearer JWTs of one issuer for one audience; thread-safe, one per process."""

    def __init__(self, issuer: str, audience: str, *,
                 role_map: Mapping[str, tuple[str, ...]] | None = None, fetch: Fetch = fetch_json,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 10.0,
                 min_refresh: float = MIN_REFRESH_SECONDS) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_map = dict(role_map or {})
        self._fetch = fetch
        self._clock = clock
        self._timeout = timeout
        self._min_refresh = min_refresh
        self._lock = threading.Lock()
        self._jwks_uri: str | None = None
        self._keys: _Keys | None = None
        self._last_attempt: float | None = None

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; :class:`Unauthenticated` with the reason when it is not valid,
        :class:`Unavailable` when the issuer cannot be reached to get its keys."""
        header = _header(token)
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(token, key=key.key, algorithms=list(ALGORITHMS), audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the OIDC token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the OIDC token is not valid yet (nbf/iat in the future)") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"the OIDC token is not meant for this server (audience must be "
                                  f"{self.audience!r})") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(f"the OIDC token was not issued by {self.issuer}") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the OIDC token's signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the OIDC token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the OIDC token is invalid: {exc}") from exc
        _check_numeric_dates(claims)
        return claims

    def _key_for(self, kid: object) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            keys = self._keys
            stale = keys is None or now - keys.fetched > KEYS_TTL_SECONDS
            found = None if keys is None else self._match(keys, kid)
            if (stale or found is None) and self._may_fetch(now):
                # No keys yet, old ones, or a kid we do not know (the issuer rotated its keys).
                keys = self._refresh(now)
                found = self._match(keys, kid)
            if keys is None:
                raise Unavailable(f"cannot verify OIDC tokens: the keys of {self.issuer} could not be "
                                  "fetched a moment ago; try again shortly")
        if found is None:
            raise Unauthenticated(f"the OIDC token's signing key {kid!r} is not one of the issuer's keys")
        return found

    def _may_fetch(self, now: float) -> bool:
        """At most one fetch per ``min_refresh`` seconds, whatever its outcome: neither made-up
        kids nor an unreachable issuer turn requests into a stream of fetches (each under the
        lock, with a timeout)."""
        return self._last_attempt is None or now - self._last_attempt >= self._min_refresh

    @staticmethod
    def _match(keys: _Keys, kid: object) -> jwt.PyJWK | None:
        if kid is None:
            # No kid: usable only when the issuer has exactly one key.
            return next(iter(keys.by_kid.values())) if len(keys.by_kid) == 1 else None
        return keys.by_kid.get(kid) if isinstance(kid, str) else None

    def _refresh(self, now: float) -> _Keys:
        self._last_attempt = now
        try:
            if self._jwks_uri is None or self._keys is None or now - self._keys.fetched > KEYS_TTL_SECONDS:
                self._jwks_uri = self._discover()
            data = self._fetch(self._jwks_uri, self._timeout)
            key_set = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            # requests' errors are OSErrors; a JSON error is a ValueError.
            log.warning("OIDC: could not get the keys of %s: %s", self.issuer, exc)
            if self._keys is not None:
                return self._keys  # keep verifying with the keys we have
            raise Unavailable(f"cannot verify OIDC tokens: the keys of {self.issuer} could not be "
                              f"fetched ({type(exc).__name__})") from exc
        by_kid = {k.key_id: k for k in key_set.keys if k.key_id and k.key_type == "RSA"}
        if not by_kid and len(key_set.keys) == 1:
            by_kid = {"": key_set.keys[0]}
        self._keys = _Keys(by_kid=by_kid, fetched=now)
        log.info("OIDC: %d key(s) of %s loaded", len(by_kid), self.issuer)
        return self._keys

    def _discover(self) -> str:
        doc = self._fetch(self.issuer.rstrip("/") + DISCOVERY_PATH, self._timeout)
        if not isinstance(doc, Mapping):
            raise ValueError("the discovery document is not a JSON object")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise ValueError(f"the discovery document names issuer {doc.get('issuer')!r}")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).netloc != urlsplit(self.issuer).netloc:
            raise ValueError("the discovery document's jwks_uri is missing or not on the issuer's host")
        return jwks_uri


def verifier_from_config(config: Any) -> OidcVerifier | None:
    """The process's verifier, or None when OIDC is not configured."""
    if not config.oidc_issuer:
        return None
    return OidcVerifier(config.oidc_issuer, config.oidc_audience,
                        role_map=parse_role_map(config.oidc_role_map))
