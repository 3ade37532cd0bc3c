"""Web console single sign-on: OpenID Connect's authorization code flow with PKCE (S256).

:func:`begin` makes the state, nonce and PKCE verifier of one attempt and the issuer's
authorization URL; the console keeps the three in a short-lived HttpOnly cookie and sends the
browser on. :func:`complete` takes the code the issuer sent back, checks the state against
the cookie's, exchanges the code (with the verifier) at the token endpoint, and verifies the
ID token (signature with the issuer's keys, issuer, audience = the console's client id,
expiry, and the nonce). The user is the one the configured claim names in the configured
tenant; an ID token naming nobody there signs nobody in (users are made by admins).
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
CODE_CHALLENGE_METHOD = "S256"
TIMEOUT = 10.0
MAX_TOKEN_ANSWER_BYTES = 256 * 1024
_SECRET_BYTES = 32

PostForm = Callable[[str, Mapping[str, str], float], Any]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: what the cookie keeps, and where the browser goes."""

    state: str
    nonce: str
    verifier: str
    url: str

    def cookie(self) -> str:
        return f"{self.state}.{self.nonce}.{self.verifier}"


def parse_cookie(value: str) -> tuple[str, str, str] | None:
    parts = value.split(".")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


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
                 fetch: oidc.Fetch = oidc.fetch_json, post: PostForm = post_form) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_claim = user_claim
        self._fetch = fetch
        self._post = post
        self._endpoints: tuple[str, str] | None = None
        self.verifier = oidc.OidcVerifier(issuer, client_id, fetch=fetch)

    def endpoints(self) -> tuple[str, str]:
        """The issuer's authorization and token endpoints, from its discovery document (both on
        the issuer's own host: a document cannot send our codes and secret elsewhere)."""
        if self._endpoints is None:
            try:
                doc = self._fetch(self.issuer + oidc.DISCOVERY_PATH, TIMEOUT)
            except (OSError, ValueError) as exc:
                raise Unavailable(f"the OIDC issuer {self.issuer} cannot be reached ({type(exc).__name__})") from exc
            host = urlsplit(self.issuer).netloc
            found = (doc.get("authorization_endpoint"), doc.get("token_endpoint")) if isinstance(doc, Mapping) \
                else (None, None)
            if not all(isinstance(u, str) and urlsplit(u).netloc == host for u in found):
                raise Unavailable("the OIDC issuer's discovery document lacks authorization and token "
                                  "endpoints on its own host")
            self._endpoints = (str(found[0]), str(found[1]))
        return self._endpoints

    def begin(self, redirect_uri: str) -> Attempt:
        state, nonce = secrets.token_urlsafe(_SECRET_BYTES), secrets.token_urlsafe(_SECRET_BYTES)
        verifier = secrets.token_urlsafe(_SECRET_BYTES)
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                           "scope": SCOPE, "state": state, "nonce": nonce, "code_challenge": challenge(verifier),
                           "code_challenge_method": CODE_CHALLENGE_METHOD})
        authorize = self.endpoints()[0]
        return Attempt(state, nonce, verifier, f"{authorize}{'&' if '?' in authorize else '?'}{query}")

    def complete(self, cookie: str, state: str, code: str, redirect_uri: str) -> str:
        """The user name the verified ID token names; :class:`Forbidden` for a state that is
        not this browser's (a forged or replayed callback), :class:`Unauthenticated` for a
        code or token the issuer does not stand behind."""
        kept = parse_cookie(cookie)
        if kept is None or not state or not hmac.compare_digest(kept[0].encode(), state.encode()):
            raise Forbidden("this sign-in did not start in this browser (its state does not match); "
                            "start again")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": kept[2]}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            answer = self._post(self.endpoints()[1], form, TIMEOUT)
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
        return name


def from_config(config: Any) -> ConsoleSignOn | None:
    """The process's console sign-on, or None when it is not configured."""
    if not (config.oidc_issuer and config.oidc_console_client_id):
        return None
    return ConsoleSignOn(config.oidc_issuer, config.oidc_console_client_id, config.oidc_console_client_secret,
                         config.oidc_console_user_claim)
