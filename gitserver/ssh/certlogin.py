"""Who an SSH certificate is: the SQL side of a certificate login, kept apart from asyncssh so
it runs in a worker thread and is tested without sockets (docs/certificates.md).

:class:`Trust` holds what the configuration trusts (site CAs, the revocation file);
:func:`identity_for_certificate` applies gitserver.identity.certs' rules with the tenant CAs,
principal records and revocations in the database.
"""

from __future__ import annotations

import dataclasses
import logging

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.identity import certs, krl
from gitserver.identity.certs import Certificate, CertificateRefused, CertificateUse
from gitserver.policy import access
from gitserver.policy.errors import ConfigError
from gitserver.ssh.identity import Identity, greeting_for_user

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trust:
    """The site's trusted user CAs (fingerprint → key blob) and its revocation file."""

    site_cas: dict[str, bytes]
    revocations: krl.RevocationFile

    @classmethod
    def from_config(cls, config: Config) -> Trust:
        """Read at start: a CA file or revocation file that is wrong stops the daemon there."""
        trust = cls(certs.load_site_cas(config.ssh_user_ca_keys),
                    krl.RevocationFile(config.ssh_revoked_keys))
        try:
            trust.revoked()
        except krl.KrlError as exc:
            raise ConfigError(f"setting ssh_revoked_keys: {exc}") from exc
        return trust

    def revoked(self) -> krl.Revoked:
        """The revocation file as it is now (ConfigError-like KrlError when unreadable)."""
        return self.revocations.current()

    def key_revoked(self, blob: bytes) -> bool:
        """For plain keys: a key in the revocation file is refused like sshd's RevokedKeys."""
        return self.revoked().key_revoked(blob)


def tenant_cas(session: Session, ca_fingerprint: str) -> list[models.SshCa]:
    """The tenant CA rows of one CA key (several tenants may trust the same CA)."""
    return list(session.scalars(select(models.SshCa).where(models.SshCa.fingerprint == ca_fingerprint)))


def identity_for_certificate(session: Session, trust: Trust, cert: Certificate) -> Identity:
    """The user ``cert`` logs in as, or CertificateRefused saying why (for the log)."""
    problem = certs.refusal(cert, utcnow())
    if problem:
        raise CertificateRefused(problem)
    _check_revocation_file(trust, cert)
    ca_fingerprint = cert.ca_fingerprint
    site_ca = ca_fingerprint in trust.site_cas
    rows = tenant_cas(session, ca_fingerprint)
    if not site_ca and not rows:
        raise CertificateRefused(f"the certificate's CA {ca_fingerprint} is not trusted")
    records = [certs.PrincipalRecord(r.principal, r.user_id, r.tenant_id) for r in session.scalars(
        select(models.SshPrincipal).where(models.SshPrincipal.principal.in_(cert.principals)))]
    user_id = certs.choose_user(cert.principals, records, site_ca=site_ca,
                                ca_tenants=[r.tenant_id for r in rows])
    user = session.get(models.User, user_id)
    if user is None or user.disabled:
        raise CertificateRefused("the user its principal names is disabled")
    _check_ca_revocations(session, [r.id for r in rows if r.tenant_id == user.tenant_id], cert)
    use = CertificateUse(ca_fingerprint=ca_fingerprint, key_id=cert.key_id, serial=cert.serial,
                         certificate=cert)
    principal = dataclasses.replace(access.principal_for_user(user), key_fingerprint=cert.key_fingerprint,
                                    certificate=use)
    return Identity(principal, greeting_for_user(principal))


def _check_revocation_file(trust: Trust, cert: Certificate) -> None:
    """sshd's order: the certificate by CA and serial or key id, then its key, then its CA."""
    revoked = trust.revoked()
    if revoked.certificate_revoked(cert.ca_blob, cert.serial, cert.key_id):
        raise CertificateRefused(f"certificate serial {cert.serial} key id {cert.key_id!r} is revoked "
                                 "(ssh_revoked_keys)")
    if revoked.key_revoked(cert.key_blob):
        raise CertificateRefused("the certificate's key is revoked (ssh_revoked_keys)")
    if revoked.key_revoked(cert.ca_blob):
        raise CertificateRefused("the certificate's CA is revoked (ssh_revoked_keys)")


def _check_ca_revocations(session: Session, ca_ids: list[int], cert: Certificate) -> None:
    """The revocations of the tenant's CA rows (``…/ssh-cas/{id}/revoked``). Serial 0 is what
    a CA that sets none gives every certificate, so it revokes nothing (as in a KRL)."""
    if not ca_ids:
        return
    matches = [models.SshCaRevocation.key_id == cert.key_id]
    if cert.serial:
        matches.append(models.SshCaRevocation.serial == str(cert.serial))
    hit = session.scalar(select(models.SshCaRevocation.id).where(
        models.SshCaRevocation.ca_id.in_(ca_ids), or_(*matches)).limit(1))
    if hit is not None:
        raise CertificateRefused(f"certificate serial {cert.serial} key id {cert.key_id!r} is revoked "
                                 "by its tenant")


def current_identity(session: Session, trust: Trust, principal: access.Principal) -> Identity:
    """The identity of a certificate login as it stands now, before each command of a
    multiplexed connection: an expired or revoked certificate, a removed CA or principal
    record stops at the next command."""
    assert principal.certificate is not None
    return identity_for_certificate(session, trust, principal.certificate.certificate)
