"""A local OIDC issuer for tests: RSA keys made here, tokens signed with them, and (for
functional tests) a loopback HTTP server with the discovery document and the JWKS.

Stands in for PNC's Keycloak, which cannot run here; the verification side under test is the
real one (PyJWT through :mod:`gitserver.identity.oidc`)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

# The realm roles of PNC's service account as Keycloak lists them (Reqour's role first).
KEYCLOAK_ROLES = ("pnc-app-repour-user", "offline_access", "uma_authorization")


class Issuer:
    """Keys and token minting; ``documents(url)`` are what the issuer at ``url`` serves."""

    def __init__(self, url: str = "https://keycloak.example.org/auth/realms/pnc") -> None:
        self.url = url
        self.keys: dict[str, Any] = {}
        self.kid = self.rotate()

    def rotate(self) -> str:
        """A new signing key, published next to the old ones; new tokens use it."""
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/protocol/openid-connect/certs",
                "token_endpoint": f"{self.url}/protocol/openid-connect/token"}

    def token(self, *, audience: str = "gitserver", roles: tuple[str, ...] = KEYCLOAK_ROLES,
              lifetime: int = 300, kid: str | None = None, key: Any = None, **claims: Any) -> str:
        """A Keycloak-shaped service-account access token."""
        now = int(time.time())
        body = {"iss": self.url, "aud": audience, "sub": "service-account-pnc", "azp": "pnc",
                "preferred_username": "service-account-pnc", "iat": now, "exp": now + lifetime,
                "realm_access": {"roles": list(roles)}, **claims}
        kid = kid or self.kid
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def raw_token(self, header: dict[str, Any], **claims: Any) -> str:
        """A token signed by hand with the current key, for headers PyJWT refuses to write
        (a kid that is not a string, crit): RS256 is PKCS#1 v1.5 over SHA-256."""
        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        body = {"iss": self.url, "aud": "gitserver", "sub": "service-account-pnc", "iat": now,
                "exp": now + 300, "realm_access": {"roles": list(KEYCLOAK_ROLES)}, **claims}
        signing_input = (part(json.dumps({"alg": "RS256", "typ": "JWT", **header}).encode()) + "."
                         + part(json.dumps(body).encode()))
        signature = self.keys[self.kid].sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{part(signature)}"

    def fetch(self, url: str, timeout: float) -> Any:
        """What an HTTP fetch from this issuer returns (unit tests: no sockets)."""
        if url == self.url + "/.well-known/openid-configuration":
            return self.discovery()
        if url == self.discovery()["jwks_uri"]:
            return self.jwks()
        raise OSError(f"404 {url}")


class IssuerServer:
    """:class:`Issuer` behind a loopback HTTP server that counts JWKS fetches."""

    def __init__(self) -> None:
        self.jwks_fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    data = outer.issuer.fetch(outer.issuer.url + self.path.removeprefix(outer.path), 5)
                except OSError:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.endswith("/certs"):
                    outer.jwks_fetches += 1
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.path = "/realms/pnc"
        self.issuer = Issuer(f"http://127.0.0.1:{self.httpd.server_address[1]}{self.path}")
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
