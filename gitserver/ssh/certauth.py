"""The asyncssh side of certificate logins (docs/certificates.md), for gitserver.ssh.server.

asyncssh 2.24's own way of trusting a CA (``validate_ca_key``) makes it require the SSH login
name (``git``) as a principal and hides the certificate from the server; and it accepts a
certificate with no principals for any user. So the connection trusts exactly the offered
certificate's CA, once gitserver knows that CA, through an authorized-keys entry
``cert-authority,principals="*"``: asyncssh then checks the certificate's type, validity window
and ``source-address`` (and ``*`` matches no certificate without principals), and gitserver
applies its own rules after it (gitserver.ssh.certlogin): revocation, principal records, the
CA's scope, ``force-command``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncssh
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db.session import transaction
from gitserver.identity import certs, krl
from gitserver.identity.certs import CertificateRefused
from gitserver.identity.keys import fingerprint_of_blob
from gitserver.observe import metrics
from gitserver.policy.errors import Forbidden
from gitserver.ssh import certlogin
from gitserver.ssh.identity import Identity

log = logging.getLogger(__name__)

# A command within this many seconds of the login is not checked again (the login just did,
# and the check costs a transaction); every later one of a connection kept open is.
RECHECK_AFTER = 1.0
# asyncssh's SSHServerConnection.validate_public_key(username, key_data, msg, signature).
Validate = Callable[[str, bytes, bytes, bytes], Awaitable[bool]]


class Judge(Protocol):
    """What :func:`judge` needs of the daemon."""

    trust: certlogin.Trust

    @property
    def sessions(self) -> sessionmaker[Session]: ...


async def judge(conn: asyncssh.SSHServerConnection, daemon: Judge, original: Validate,
                username: str, blob: bytes, msg: bytes, signature: bytes,
                address: str, cas: list[bytes]) -> Identity | None:
    """The identity the certificate ``blob`` logs in as, or None: refused, and the reason
    logged (the client sees "Permission denied", like sshd's). Database errors propagate.
    ``cas``: the CAs this connection trusts so far (a client may offer certificates of
    several), to which this certificate's is added once gitserver's rules let it in."""
    try:
        return await _judge(conn, daemon, original, username, blob, msg, signature, cas)
    except CertificateRefused as exc:
        log.warning("refusing a certificate from %s (certificate %s): %s", address,
                    fingerprint_of_blob(blob), exc)
        metrics.ssh_auth("failure", "certificate")
    except krl.KrlError as exc:
        log.error("refusing a certificate of %s: %s", address, exc)
        metrics.ssh_auth("failure", "revocation-file")
    return None


async def _judge(conn: asyncssh.SSHServerConnection, daemon: Judge, original: Validate,
                 username: str, blob: bytes, msg: bytes, signature: bytes, cas: list[bytes]) -> Identity:
    cert = certs.decode(blob)
    # gitserver's rules first, in one transaction (a trusted CA, revocation, principals); the
    # identity binds nothing until asyncssh's checks below and the signed request pass.
    found = await asyncio.to_thread(_identity, daemon, cert)
    if cert.ca_blob not in cas:
        cas.append(cert.ca_blob)
        conn.set_authorized_keys(cert_authorities(cas))
    if not await original(username, blob, msg, signature):
        raise CertificateRefused("a host certificate, outside its validity window, without "
                                 "principals, or from an address its source-address does not allow")
    return found


def _identity(daemon: Judge, cert: certs.Certificate) -> Identity:
    with transaction(daemon.sessions) as session:
        return certlogin.identity_for_certificate(session, daemon.trust, cert)


def cert_authorities(cas: list[bytes]) -> asyncssh.SSHAuthorizedKeys:
    """The authorized-keys entries that make asyncssh check certificates of these CAs."""
    lines = []
    for ca_blob in cas:
        algorithm = ca_blob[4:4 + int.from_bytes(ca_blob[:4], "big")].decode("ascii")
        lines.append(f'cert-authority,principals="*" {algorithm} {base64.b64encode(ca_blob).decode()}')
    return asyncssh.import_authorized_keys("\n".join(lines))


def key_allowed(trust: certlogin.Trust, blob: bytes, address: str) -> bool:
    """A plain key is not in the revocation file (ssh_revoked_keys covers plain keys too, as
    sshd's RevokedKeys does). An unreadable file refuses every key rather than a revoked one."""
    try:
        revoked = trust.key_revoked(blob)
    except krl.KrlError as exc:
        log.error("refusing the key of %s: %s", address, exc)
        metrics.ssh_auth("failure", "revocation-file")
        return False
    if revoked:
        log.warning("refusing a revoked key from %s: %s", address, fingerprint_of_blob(blob))
        metrics.ssh_auth("failure", "revoked-key")
    return not revoked


def current_or_forbidden(session: Session, trust: certlogin.Trust, found: Identity) -> Identity:
    """A certificate login as it stands now (a multiplexed connection serves commands long
    after it authenticated): expired, revoked, its CA or principal record removed, its user
    disabled, and the next command is refused with the reason."""
    try:
        current = certlogin.current_identity(session, trust, found.principal)
    except (CertificateRefused, krl.KrlError) as exc:
        log.warning("refusing a command of a certificate login: %s", exc)
        raise Forbidden(f"this certificate is no longer valid ({exc}); "
                        "reconnect to authenticate again") from exc
    if current.principal.user_id != found.principal.user_id:
        raise Forbidden("this certificate's principal now names another user; reconnect to authenticate again")
    return current
