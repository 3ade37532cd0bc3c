"""OpenSSH user certificates: what one says, whether it may log in, and which user it is.

Pure functions over the facts of a certificate (:class:`Certificate`, decoded by asyncssh: the
format is never parsed by hand) and the principal records that name users. The rules
(docs/certificates.md):

- a principal names a user only through an explicit record; key text and user names are
  never compared;
- a site CA's principals are looked up in every tenant, a tenant CA's only in its tenants;
- a certificate whose principals name two users, or none the CA may vouch for, is refused;
- no principals, ``force-command`` (a git server cannot honour it), an unknown critical
  option, a host certificate, or a time outside the validity window: refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from gitserver.identity.keys import PublicKey, fingerprint_of_blob, key_lines, parse_public_key
from gitserver.policy.errors import ConfigError, InvalidInput

CERT_SUFFIX = b"-cert-v01@openssh.com"
CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2
FORCE_COMMAND = "force-command"
SOURCE_ADDRESS = "source-address"
# More principals than any real certificate carries: bounds the lookup one login asks for.
MAX_PRINCIPALS = 256
# Principals as ssh-keygen -n writes them: printable, no whitespace, no comma (its separator);
# and no slash, so that every record can be named in its URL (…/principals/{name}).
PRINCIPAL_RE = re.compile(r"^[\x21-\x2b\x2d\x2e\x30-\x7e]{1,255}$")
MAX_KEY_ID = 1024
# The largest serial: certificates carry an unsigned 64-bit one.
MAX_SERIAL = 2**64 - 1


class CertificateRefused(Exception):
    """A certificate that may not log in; the reason goes to the log (the client only ever
    sees "Permission denied", like sshd's)."""


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The facts of one OpenSSH certificate that the login rules need."""

    blob: bytes  # the certificate as the client sent it
    key_blob: bytes  # the certified public key
    ca_blob: bytes  # the signing CA's public key
    cert_type: int
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int  # seconds since the epoch (0: always)
    valid_before: int  # (2**64 - 1: for ever)
    # The names of its critical options and extensions (asyncssh refuses unknown critical
    # options; it has checked source-address's value itself).
    options: frozenset[str]

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint_of_blob(self.ca_blob)

    @property
    def key_fingerprint(self) -> str:
        return fingerprint_of_blob(self.key_blob)


@dataclasses.dataclass(frozen=True)
class CertificateUse:
    """What an identity keeps of the certificate it logged in with: for the push's record and
    for the check before every later command of the connection."""

    ca_fingerprint: str
    key_id: str
    serial: int
    certificate: Certificate


def is_certificate(blob: bytes) -> bool:
    """Whether an SSH key blob is an OpenSSH certificate (its algorithm name says so)."""
    if len(blob) < 4:
        return False
    length = int.from_bytes(blob[:4], "big")
    return blob[4:4 + length].endswith(CERT_SUFFIX)


def decode(blob: bytes) -> Certificate:
    """Decode a certificate with asyncssh; CertificateRefused when it cannot be used at all
    (asyncssh refuses an unknown critical option here, naming it)."""
    from asyncssh import KeyImportError  # loaded by the SSH daemon only
    from asyncssh.public_key import SSHOpenSSHCertificate, decode_ssh_certificate

    try:
        cert = decode_ssh_certificate(blob)
    except (KeyImportError, ValueError) as exc:
        # asyncssh words an unknown critical option and a malformed certificate alike
        raise CertificateRefused(f"{exc}: not a valid certificate, or one with a critical option "
                                 "other than force-command and source-address") from exc
    if not isinstance(cert, SSHOpenSSHCertificate):
        raise CertificateRefused("only OpenSSH certificates are accepted")
    # asyncssh 2.24 keeps the type, serial, key id and window in private attributes (it has
    # verified the signature over them); a unit test pins them against ssh-keygen's output.
    fields = vars(cert)
    return Certificate(
        blob=blob, key_blob=cert.key.public_data, ca_blob=cert.signing_key.public_data,
        cert_type=int(fields["_cert_type"]), serial=int(fields["_serial"]),
        key_id=str(fields["_key_id"]), principals=tuple(cert.principals),
        valid_after=int(fields["_valid_after"]), valid_before=int(fields["_valid_before"]),
        options=frozenset(cert.options))


def refusal(cert: Certificate, now: dt.datetime) -> str | None:
    """Why ``cert`` may not log in whatever its CA and principals, or None.

    asyncssh checks the type, the window and ``source-address`` during authentication too;
    the window is checked here again because a multiplexed connection outlives it.
    """
    if cert.cert_type != CERT_TYPE_USER:
        return "a host certificate offered as a user certificate"
    if not cert.principals:
        return "the certificate has no principals (it would name anyone)"
    if len(cert.principals) > MAX_PRINCIPALS:
        return f"the certificate has more than {MAX_PRINCIPALS} principals"
    if FORCE_COMMAND in cert.options:
        return "the certificate has force-command, which a git server cannot honour"
    stamp = now.timestamp()
    if stamp < cert.valid_after:
        return "the certificate is not valid yet"
    if stamp >= cert.valid_before:
        return "the certificate has expired"
    return None


@dataclasses.dataclass(frozen=True)
class PrincipalRecord:
    """One principal record: the user it names and that user's tenant."""

    principal: str
    user_id: int
    tenant_id: int


def choose_user(principals: Sequence[str], records: Iterable[PrincipalRecord], *,
                site_ca: bool, ca_tenants: Iterable[int]) -> int:
    """The one user the certificate's principals name among those its CA may vouch for.

    ``records``: the records of (some of) ``principals``; ``site_ca``: the CA is trusted
    site-wide (every tenant's records count); ``ca_tenants``: the tenants that trust it. A
    principal is matched exactly, never as a pattern or against a user name.
    """
    wanted = set(principals)
    tenants = set(ca_tenants)
    vouched = {r.user_id for r in records
               if r.principal in wanted and (site_ca or r.tenant_id in tenants)}
    if not vouched:
        return _no_user(site_ca)
    if len(vouched) > 1:
        raise CertificateRefused(f"the certificate's principals name {len(vouched)} different users")
    return vouched.pop()


def _no_user(site_ca: bool) -> NoReturn:
    scope = "any tenant" if site_ca else "the tenants that trust its CA"
    raise CertificateRefused(f"no principal of the certificate names a user of {scope}")


# --- input: principal names, CA keys ------------------------------------------------------------

def validate_principal(value: object, field: str = "principal") -> str:
    if not isinstance(value, str) or not PRINCIPAL_RE.fullmatch(value):
        raise InvalidInput("principal must be 1 to 255 printable characters without spaces, commas "
                           "or slashes", field=field)
    return value


def parse_ca_key(text: object, field: str = "key") -> PublicKey:
    """A CA's public key line (what ``ssh-keygen -s`` signs with, its ``.pub``)."""
    try:
        return parse_public_key(text)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=field) from exc


def load_site_cas(paths: Iterable[str]) -> dict[str, bytes]:
    """The site's trusted user CAs (``GITSERVER_SSH_USER_CA_KEYS``): fingerprint → key blob.
    Each file holds one or more public key lines (``#`` comments and blank lines skipped);
    ConfigError naming the file and line that is not a key."""
    found: dict[str, bytes] = {}
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"setting ssh_user_ca_keys: cannot read {path}: {exc}") from exc
        for number, line in key_lines(text.splitlines()):
            try:
                key = parse_public_key(line)
            except InvalidInput as exc:
                raise ConfigError(f"setting ssh_user_ca_keys: {path} line {number}: {exc.message}") from exc
            found[key.fingerprint] = key.blob
    return found
