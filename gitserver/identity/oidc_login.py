"""Web console single sign-on: OpenID Connect's authorization code flow with PKCE (S256).

:func:`begin` makes the state, nonce and PKCE verifier of one attempt and the issuer's
authorization URL; the console keeps the three in a short-lived HttpOnly cookie and sends the
browser on. :func:`complete` takes the code the issuer sent back, checks the state against
the cookie's, exchanges the code (with the verifier) at the token endpoint, and verifies the
ID token (signature with the issuer's keys, issuer, audience = the console's client id,
expiry, and the nonce). The verified token names a user (the configured claim) and the
tenants it may be a user of (:func:`token_tenants`); the console signs in that user of one of
them, never creating one (users are made by admins). :meth:`ConsoleSignOn.logout_url` is
RP-initiated logout: where the browser goes to end its session at the issuer too, when the
issuer advertises an ``end_session_endpoint``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from gitserver.identity import oidc
from gitserver.policy.errors import Forbidden, Unauthenticated, Unavailable

SCOPE = "openid profile"
# OpenID Connect RP-Initiated Logout 1.0: the discovery field and the request's parameters.
END_SESSION_ENDPOINT = "end_session_endpoint"
ID_TOKEN_HINT = "id_token_hint"
POST_LOGOUT_REDIRECT_URI = "post_logout_redirect_uri"
# A tenant claim naming more tenants than this is cut (a page lists them to choose from).
MAX_CLAIMED_TENANTS = 50
CODE_CHALLENGE_METHOD = "S256"
TIMEOUT = 10.0
MAX_TOKEN_ANSWER_BYTES = 256 * 1024
_SECRET_BYTES = 32

PostForm = Callable[[str, Mapping[str, str], float], Any]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: what the cookie keeps (the tenant chosen at the start, or ""),
    and where the browser goes."""

    state: str
    nonce: str
    verifier: str
    tenant: str
    url: str

    def cookie(self) -> str:
        # The three secrets are base64url (no dots); the tenant goes last, dots and all.
        return f"{self.state}.{self.nonce}.{self.verifier}.{self.tenant}"


def parse_cookie(value: str) -> tuple[str, str, str, str] | None:
    parts = value.split(".", 3)
    if len(parts) == 3:
        parts.append("")
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 and all(parts[:3]) else None


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """The issuer's endpoints the console uses, from its discovery document."""

    authorize: str
    token: str
    end_session: str | None


@dataclasses.dataclass(frozen=True)
class SignedOn:
    """What a verified ID token says: the user's name, the tenants it may be a user of (in
    order, no repeats), the tenant chosen at the start ("" for none), and the token itself
    (kept as the ``id_token_hint`` of the logout at the issuer)."""

    user: str
    tenants: tuple[str, ...]
    chosen: str
    id_token: str


def claimed_names(value: object) -> list[str]:
    """A tenant claim's names: a string, a list of strings, or an object whose keys are the
    names (Keycloak's ``organization`` claim with its attributes)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Mapping):
        value = list(value)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v][:MAX_CLAIMED_TENANTS]
    return []


def token_tenants(claims: Mapping[str, Any], tenant_claim: str, role_map: Mapping[str, tuple[str, ...]],
                  default_tenant: str) -> tuple[str, ...]:
    """The tenants an ID token may sign a user in to: those its tenant claim names, then those
    its roles make it an admin of through ``oidc_role_map`` (the mapping the API applies to
    OIDC bearer tokens, so both fronts put one identity in the same tenant), then the
    configured default tenant."""
    names = claimed_names(claims.get(tenant_claim)) if tenant_claim else []
    names += oidc.grant_for_roles(oidc.token_roles(claims), role_map).tenant_admin
    if default_tenant:
        names.append(default_tenant)
    return tuple(dict.fromkeys(names))


def challenge(verifier: str) -> str:
    """PKCE's S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def post_form(url: str, form: Mapping[str, str], timeout: float) -> Any:
    response = requests.post(url, data=dict(form), timeout=timeout, allow_redirects=False,
                             headers={"Accept": "application/json"})
    if len(response.content) > MAX_TOKEN_ANSWER_BYTES:
        raise ValueError("the token endpoint's answer is too large")
    if response.status_code != 200:
        raise PermissionError(f"the token endpoint answered {response.status_code}")
    return response.json()


class ConsoleSignOn:
    """The console's OIDC client for one issuer; one per process."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, user_claim: str, *,
                 tenant_claim: str = "", role_map: Mapping[str, tuple[str, ...]] | None = None,
                 default_tenant: str = "", fetch: oidc.Fetch = oidc.fetch_json, post: PostForm = post_form) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_claim = user_claim
        self.tenant_claim = tenant_claim
        self.role_map = dict(role_map or {})
        self.default_tenant = default_tenant
        self._fetch = fetch
        self._post = post
        self._endpoints: Endpoints | None = None
        self.verifier = oidc.OidcVerifier(issuer, client_id, fetch=fetch)

    @property
    def origin(self) -> str:
        """The issuer's scheme and host: where the sign-out form's redirect may go (CSP)."""
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    def endpoints(self) -> Endpoints:
        """The issuer's endpoints, from its discovery document, each on the issuer's own host
        (a document cannot send our codes, secret or ID tokens elsewhere); a foreign
        ``end_session_endpoint`` is ignored (sign-out is then local only)."""
        if self._endpoints is None:
            try:
                doc = self._fetch(self.issuer + oidc.DISCOVERY_PATH, TIMEOUT)
            except (OSError, ValueError) as exc:
                raise Unavailable(f"the OIDC issuer {self.issuer} cannot be reached ({type(exc).__name__})") from exc
            doc = doc if isinstance(doc, Mapping) else {}
            authorize, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
            if not (self._own(authorize) and self._own(token)):
                raise Unavailable("the OIDC issuer's discovery document lacks authorization and token "
                                  "endpoints on its own host")
            end_session = doc.get(END_SESSION_ENDPOINT)
            self._endpoints = Endpoints(str(authorize), str(token),
                                        str(end_session) if self._own(end_session) else None)
        return self._endpoints

    def _own(self, url: object) -> bool:
        return isinstance(url, str) and urlsplit(url).netloc == urlsplit(self.issuer).netloc

    def begin(self, redirect_uri: str, tenant: str = "") -> Attempt:
        state, nonce = secrets.token_urlsafe(_SECRET_BYTES), secrets.token_urlsafe(_SECRET_BYTES)
        verifier = secrets.token_urlsafe(_SECRET_BYTES)
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                           "scope": SCOPE, "state": state, "nonce": nonce, "code_challenge": challenge(verifier),
                           "code_challenge_method": CODE_CHALLENGE_METHOD})
        return Attempt(state, nonce, verifier, tenant, _with_query(self.endpoints().authorize, query))

    def logout_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """Where the browser ends its session at the issuer (RP-initiated logout) and comes back
        to ``post_logout_redirect_uri``; None when the issuer advertises no end-session endpoint
        (or cannot be reached: sign-out here must not wait on it)."""
        try:
            end_session = self.endpoints().end_session
        except Unavailable:
            return None
        if end_session is None:
            return None
        query = {"client_id": self.client_id, POST_LOGOUT_REDIRECT_URI: post_logout_redirect_uri}
        if id_token:
            query[ID_TOKEN_HINT] = id_token
        return _with_query(end_session, urlencode(query))

    def complete(self, cookie: str, state: str, code: str, redirect_uri: str) -> SignedOn:
        """What the verified ID token says; :class:`Forbidden` for a state that is not this
        browser's (a forged or replayed callback), :class:`Unauthenticated` for a code or token
        the issuer does not stand behind."""
        kept = parse_cookie(cookie)
        if kept is None or not state or not hmac.compare_digest(kept[0].encode(), state.encode()):
            raise Forbidden("this sign-in did not start in this browser (its state does not match); "
                            "start again")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": kept[2]}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            answer = self._post(self.endpoints().token, form, TIMEOUT)
        except PermissionError as exc:
            raise Unauthenticated(f"the OIDC issuer refused the sign-in code ({exc})") from exc
        except (OSError, ValueError) as exc:
            raise Unavailable(f"the OIDC issuer's token endpoint failed ({type(exc).__name__})") from exc
        id_token = answer.get("id_token") if isinstance(answer, Mapping) else None
        if not isinstance(id_token, str):
            raise Unauthenticated("the OIDC issuer's answer has no ID token")
        claims = self.verifier.verify(id_token)
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), kept[1].encode()):
            raise Unauthenticated("the ID token's nonce is not this sign-in's")
        name = claims.get(self.user_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the ID token has no {self.user_claim!r} claim naming a user")
        tenants = token_tenants(claims, self.tenant_claim, self.role_map, self.default_tenant)
        return SignedOn(name, tenants, kept[3], id_token)


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def from_config(config: Any) -> ConsoleSignOn | None:
    """The process's console sign-on, or None when it is not configured."""
    if not (config.oidc_issuer and config.oidc_console_client_id):
        return None
    return ConsoleSignOn(config.oidc_issuer, config.oidc_console_client_id, config.oidc_console_client_secret,
                         config.oidc_console_user_claim, tenant_claim=config.oidc_console_tenant_claim,
                         role_map=oidc.parse_role_map(config.oidc_role_map),
                         default_tenant=config.oidc_console_tenant)
