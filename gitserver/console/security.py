"""The console's security headers and its CSRF check.

Every response of the HTTP port gets ``X-Content-Type-Options: nosniff`` (a raw file or an
API answer is never sniffed into HTML); every console response also gets a strict CSP: no
inline script at all (the pages' one script file is served from ``'self'``), no framing,
forms that post only here. Pushed content is escaped by the templates; the CSP is the second
wall should an escape ever be missed.
"""

from __future__ import annotations

import falcon

CONSOLE_PREFIX = "/ui"
# The REST API's paths: its authenticated answers are never cached.
API_PREFIX = "/api/"
CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
# A raw file is served from our origin: should a browser ever render one, it runs in a sandbox.
RAW_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
CSRF_FIELD = "csrf_token"


def is_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def csp(form_origins: tuple[str, ...] = ()) -> str:
    """The console's CSP; ``form_origins`` may also receive a form's redirect (the OIDC
    issuer, where sign-out sends the browser on: browsers hold a POST's redirects to
    ``form-action`` too)."""
    if not form_origins:
        return CSP
    return CSP.replace("form-action 'self'", " ".join(("form-action 'self'", *form_origins)))


class HeadersMiddleware:
    """The headers of docs/console.md (Security), on every response including errors."""

    def __init__(self, form_origins: tuple[str, ...] = ()) -> None:
        self.csp = csp(form_origins)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        if not is_console(req.path):
            if req.path.startswith(API_PREFIX) and req.get_header("Authorization") is not None:
                # An authenticated answer is for its caller alone (a new token's secret, a
                # private repository's metadata): no cache on the way keeps it.
                resp.set_header("Cache-Control", "no-store")
            return
        if resp.get_header("Content-Security-Policy") is None:
            resp.set_header("Content-Security-Policy", self.csp)
        resp.set_header("X-Frame-Options", "DENY")
        # Page URLs carry repository and file names; a sign-in link its secret.
        resp.set_header("Referrer-Policy", "same-origin")
        resp.set_header("Cache-Control", "no-store")


def cookie_secure(public_http_url: str) -> bool:
    """Secure cookies behind TLS (the public URL is https); plain http would drop them."""
    return public_http_url.lower().startswith("https://")
