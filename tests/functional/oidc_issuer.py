"""A small OpenID Connect issuer for the console's single sign-on tests, on a loopback port.

A stand-in for Keycloak, which cannot run here: discovery, JWKS, an authorization endpoint
that signs in one configured user at once (no login form) and sends the browser back with a
code, a token endpoint that checks the code, the redirect URI and the PKCE verifier
against the S256 challenge before it answers with an RS256 ID token carrying the nonce (and
``claims``: a tenant claim, Keycloak's roles), and, when ``end_session`` is on, an
RP-initiated logout endpoint that checks the ``id_token_hint`` is one it signed for the
client before it sends the browser to the ``post_logout_redirect_uri``. Every request it saw
is kept for the tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "test-key"


class Issuer:
    def __init__(self, port: int, client_id: str, user: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = client_id
        self.user = user
        self.claims: dict[str, Any] = {}  # more claims of the next ID tokens
        self.end_session = True  # advertise end_session_endpoint (read at the client's discovery)
        self.issued: list[str] = []  # every ID token, in order
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, str]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Issuer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}

    def id_token(self, nonce: str, user: str) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.client_id, "sub": f"sub-{user}", "preferred_username": user,
                  "nonce": nonce, "iat": now, "exp": now + 300, **self.claims}
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})
        self.issued.append(token)
        return token

    def discovery(self) -> dict[str, Any]:
        doc = {"issuer": self.url, "authorization_endpoint": self.url + "/authorize",
               "token_endpoint": self.url + "/token", "jwks_uri": self.url + "/jwks"}
        if self.end_session:
            doc["end_session_endpoint"] = self.url + "/logout"
        return doc

    def logout(self, query: dict[str, str]) -> tuple[int, str]:
        """RP-initiated logout: (status, where the browser goes next)."""
        try:
            # The hint may have expired (the spec allows it); its signature and audience must hold.
            jwt.decode(query.get("id_token_hint", ""), self.key.public_key(), algorithms=["RS256"],
                       audience=self.client_id, options={"verify_exp": False})
        except jwt.InvalidTokenError:
            return 400, ""
        return 302, query["post_logout_redirect_uri"]

    def authorize(self, query: dict[str, str]) -> str:
        """Where the browser goes next: back to the client with a code."""
        assert query["response_type"] == "code" and query["client_id"] == self.client_id
        assert query["code_challenge_method"] == "S256" and "openid" in query["scope"].split()
        code = secrets.token_urlsafe(16)
        self.codes[code] = query
        return f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        asked = self.codes.pop(form.get("code", ""), None)  # a code is good once
        if asked is None or form.get("redirect_uri") != asked["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != asked["code_challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier mismatch"}
        return 200, {"access_token": "x", "token_type": "Bearer", "id_token": self.id_token(asked["nonce"], self.user)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                issuer.seen.append((parts.path, query))
                if parts.path == "/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif parts.path == "/jwks":
                    self._json(200, issuer.jwks())
                elif parts.path == "/authorize":
                    self.send_response(302)
                    self.send_header("Location", issuer.authorize(query))
                    self.end_headers()
                elif parts.path == "/logout" and issuer.end_session:
                    status, location = issuer.logout(query)
                    self.send_response(status)
                    if location:
                        self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                issuer.seen.append((self.path, form))
                self._json(*issuer.token(form))

        return Handler
