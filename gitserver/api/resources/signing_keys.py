"""The server's public signing keys (docs/provenance.md), for anyone: no token.

``GET /api/v1/signing-keys`` lists every key the server ever signed with and its validity
window; ``…/allowed_signers`` is the same as git's ``gpg.ssh.allowedSignersFile``, with the
windows in ssh-keygen's own time form. Both are read from ``<data>/signing/keys.json`` on
each request (a rotation by ``gitserver signing-key rotate`` shows at once, in every replica).
"""

from __future__ import annotations

from typing import Any

import falcon

from gitserver.api import openapi as oa
from gitserver.api.context import ApiContext
from gitserver.api.response import schemas
from gitserver.jsonshape import DATETIME, NULLABLE_DATETIME, STRING, Out, Shape
from gitserver.provenance import keys

SIGNING_KEYS = "/api/v1/signing-keys"
ALLOWED_SIGNERS = f"{SIGNING_KEYS}/allowed_signers"
TAG = "provenance"
TEXT_PLAIN = "text/plain; charset=utf-8"

KEY = Shape("ServerSigningKey", {
    "fingerprint": Out(STRING, "SHA256 fingerprint, as ssh-keygen -l shows it", given=True),
    "public_key": Out(STRING, "OpenSSH one-line form, ssh-ed25519 AAAA…", given=True),
    "valid_after": Out(DATETIME, "when the server started signing with it", given=True),
    "valid_before": Out(NULLABLE_DATETIME, "when it was rotated out; null while current", given=True)})
KEYS = Shape("ServerSigningKeys", {"keys": Out({"type": "array", "items": KEY.ref()}, "oldest first", given=True)})


class SigningKeys:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        history = keys.read_history(self.ctx.config.signing_dir)
        resp.media = KEYS.render(keys=[KEY.of(row) for row in keys.published(history)])


class AllowedSigners:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = TEXT_PLAIN
        resp.text = keys.allowed_signers(keys.read_history(self.ctx.config.signing_dir))


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(SIGNING_KEYS, SigningKeys(ctx))
    app.add_route(ALLOWED_SIGNERS, AllowedSigners(ctx))


OPENAPI_SCHEMAS: dict[str, Any] = schemas(KEY, KEYS)

_TEXT = {"description": "git's allowed-signers format (namespaces=\"git\", valid-after/valid-before "
                        "as YYYYMMDDHHMMSSZ), usable as gpg.ssh.allowedSignersFile",
         "content": {"text/plain": {"schema": {"type": "string"}}}}

OPENAPI_PATHS: dict[str, Any] = {
    SIGNING_KEYS: {"get": {**oa.op("listServerSigningKeys", "The server's signing keys, old and current (no token)",
                                   TAG, {200: ("Every key with its validity window", KEYS.ref())}, errors=()),
                           "security": []}},
    ALLOWED_SIGNERS: {"get": {**oa.op("getAllowedSigners", "The signing keys as an allowed-signers file "
                                      "(no token)", TAG, {200: _TEXT}, errors=()),
                              "security": []}},
}
