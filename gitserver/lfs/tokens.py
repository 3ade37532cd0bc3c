"""Short-lived LFS tokens: what an action href's header and ``git-lfs-authenticate`` carry.

A token says "this principal, on this repository, for this operation (and, for an object's
action, this object and size), until this time", signed with HMAC-SHA256 by a key every
gitserver process of the installation shares (``<data>/lfs/token.key``, made on first use,
mode 0600). Nothing is stored per token: any API replica can check one the SSH daemon issued.
The principal's permission is still computed from the database on every use (a revoked grant,
a disabled user or a role taken back takes effect at once: LfsService.principal_for_token);
the token only stands for the login that preceded it, for at most ``lfs_action_expires_seconds``,
and never past what that login came from: it names its source credential (the SSH key or deploy
key's id, the API token's id) and gitserver.lfs.sources refuses it once that source is removed
or revoked; it expires no later than an expiring API token, OIDC token or SSH certificate it
came from (tokens.expiry), and the tokens minted from it no later than it.

It travels as ``Authorization: RemoteAuth <token>`` (the scheme git-lfs's authentication
docs show for SSH-issued headers), so it is never mistaken for an API token.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from gitserver.policy import access
from gitserver.policy.errors import Unauthenticated

SCHEME = "RemoteAuth"
KEY_FILE = "token.key"
KEY_BYTES = 32
VERSION = "v1"
DOWNLOAD, UPLOAD = "download", "upload"
OPERATIONS = (DOWNLOAD, UPLOAD)
_REFUSED = "the LFS authorization has expired or is not valid here; run the git-lfs command again"
# The principal's fields a token carries (everything access.repo_permission looks at).
_PRINCIPAL_FIELDS = ("kind", "user_id", "user_name", "tenant_id", "tenant_name", "role", "key_id",
                     "key_fingerprint", "deploy_repo_id", "deploy_write", "token_id")
# Claims a token issued before a field existed lacks (it is at most one expiry period old).
_OPTIONAL_FIELDS = ("token_id",)


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a valid token allows."""

    principal: access.Principal
    repo_id: int
    operation: str
    oid: str | None = None
    size: int | None = None

    def allows(self, operation: str) -> bool:
        """An upload token also reads (git-lfs checks what it pushed); a download one only reads."""
        return self.operation == UPLOAD or operation == DOWNLOAD


def signing_key(lfs_dir: Path) -> bytes:
    """The installation's key, made once: written to a temporary name, then linked into place,
    which fails if another process was first (its key wins and is read back)."""
    path = lfs_dir / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    lfs_dir.mkdir(parents=True, exist_ok=True)
    tmp = lfs_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, grant: Grant, expires_in: int, now: float | None = None) -> str:
    p = grant.principal
    claims: dict[str, Any] = {f: getattr(p, f) for f in _PRINCIPAL_FIELDS}
    claims["scopes"] = sorted(p.scopes) if p.scopes is not None else None
    claims.update(repo=grant.repo_id, op=grant.operation, oid=grant.oid, size=grant.size,
                  exp=expiry(p, (time.time() if now is None else now) + expires_in))
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()
    return f"{VERSION}.{body}.{_b64(mac)}"


def expiry(principal: access.Principal, wanted: float) -> int:
    """``wanted``, or sooner when the credential behind the principal expires sooner."""
    ends = [wanted]
    if principal.token_expires_at is not None:
        ends.append(principal.token_expires_at.timestamp())
    if principal.certificate is not None:
        ends.append(principal.certificate.certificate.valid_before)
    return int(min(ends))


def verify(key: bytes, token: str, now: float | None = None) -> Grant:
    """The grant a token carries; Unauthenticated when it is forged, malformed or expired."""
    version, _, rest = token.partition(".")
    body, _, mac = rest.partition(".")
    if version != VERSION or not body or not mac:
        raise Unauthenticated(_REFUSED)
    expected = hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise Unauthenticated(_REFUSED)
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        raise Unauthenticated(_REFUSED) from None
    if claims["exp"] <= (time.time() if now is None else now) or claims["op"] not in OPERATIONS:
        raise Unauthenticated(_REFUSED)
    fields = {f: claims.get(f) if f in _OPTIONAL_FIELDS else claims[f] for f in _PRINCIPAL_FIELDS}
    fields["kind"] = access.PrincipalKind(fields["kind"])
    scopes = frozenset(claims["scopes"]) if claims["scopes"] is not None else None
    # The token's own end stands in for its source's: the action tokens a batch answer mints
    # for this principal (tokens.expiry) never outlive this one.
    until = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    principal = access.Principal(**fields, scopes=scopes, token_expires_at=until)
    return Grant(principal, claims["repo"], claims["op"], claims["oid"], claims["size"])


def header(token: str) -> dict[str, str]:
    return {"Authorization": f"{SCHEME} {token}"}


def from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: RemoteAuth …`` header, or None for any other header."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme == SCHEME and token.strip() else None
