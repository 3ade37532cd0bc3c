"""The daemon's host keys: one ed25519, one ECDSA and one RSA key in ``<data>/ssh``.

ed25519 is what current clients prefer; ECDSA is the newest type that JSch 0.1.54 (Jenkins
agents, Eclipse) and other clients of its era verify; RSA (with SHA-2 signatures) is for
clients that know nothing else. ``gitserver init`` creates the three, and the daemon creates
any that is missing when it starts, so a data dir made by an older version gains them.

Host certificates (``ssh_host_certificates``, docs/certificates.md) are presented beside
the plain keys, so a client whose known_hosts has ``@cert-authority`` for the host's CA connects
without a prompt and one without keeps verifying the plain key.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from gitserver.config import Config
from gitserver.identity import certs
from gitserver.policy.errors import ConfigError

log = logging.getLogger(__name__)

HOST_KEY_GLOB = "ssh_host_*_key"
CERT_ALGORITHM_SUFFIX = b"-cert-v01@openssh.com"
# File name part -> (asyncssh algorithm, RSA key size or 0), in the order OpenSSH uses.
HOST_KEY_TYPES = {
    "ed25519": ("ssh-ed25519", 0),
    "ecdsa": ("ecdsa-sha2-nistp256", 0),
    "rsa": ("ssh-rsa", 3072),
}


def key_path(directory: Path, kind: str) -> Path:
    return directory / f"ssh_host_{kind}_key"


def ensure_host_keys(directory: Path) -> list[Path]:
    """Create the missing host keys (mode 0600); returns the paths created.

    Safe when several daemons share the directory and start at once: each key is written to
    a private temporary file and linked into place, so the first one wins and nobody ever
    reads half a key or replaces a key clients already trust.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = []
    for kind, (algorithm, bits) in HOST_KEY_TYPES.items():
        path = key_path(directory, kind)
        if path.exists():
            continue
        key = (asyncssh.generate_private_key(algorithm, key_size=bits) if bits
               else asyncssh.generate_private_key(algorithm))
        tmp = directory / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.export_private_key())
            path.with_suffix(".pub").write_bytes(key.export_public_key())
            os.link(tmp, path)
            created.append(path)
        except FileExistsError:
            pass  # another process created it first; keep that one
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return created


def load_host_keys(directory: Path) -> list[asyncssh.SSHKey]:
    """Every host key in ``directory`` (missing types created first); a clear error otherwise."""
    try:
        for path in ensure_host_keys(directory):
            log.info("created SSH host key %s", path)
    except OSError as exc:
        raise ConfigError(f"cannot create SSH host keys in {directory}: {exc}") from exc
    paths = sorted(directory.glob(HOST_KEY_GLOB))
    try:
        return [asyncssh.read_private_key(str(path)) for path in paths]
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read SSH host key: {exc}") from exc


def for_config(config: Config) -> list[asyncssh.SSHKeyPair]:
    """The daemon's host key pairs: the keys in the data dir (missing types created) and the
    configured certificates of them, signing only as configured."""
    keys = load_host_keys(config.host_key_dir)
    certified = load_host_certificates(config.ssh_host_certificates, keys)
    return restrict_host_key_algorithms(keys, config.ssh_host_key_algorithms, certified)


def load_host_certificates(paths: Sequence[str], keys: Sequence[asyncssh.SSHKey]
                           ) -> list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]]:
    """Each certificate with the host key it certifies; ConfigError naming a file that is no
    host certificate or certifies none of the host keys."""
    by_blob = {key.public_data: key for key in keys}
    pairs = []
    for path in paths:
        try:
            cert = asyncssh.read_certificate(path)
        except (OSError, asyncssh.KeyImportError, ValueError) as exc:
            raise ConfigError(f"setting ssh_host_certificates: cannot read {path}: {exc}") from exc
        if not _is_host_certificate(cert):
            raise ConfigError(f"setting ssh_host_certificates: {path} is not an OpenSSH host "
                              "certificate (sign with ssh-keygen -s CA -h)")
        key = by_blob.get(cert.key.public_data)
        if key is None:
            raise ConfigError(f"setting ssh_host_certificates: {path} certifies none of the host "
                              "keys in the data dir (sign <data>/ssh/ssh_host_*_key.pub)")
        pairs.append((key, cert))
    return pairs


def _is_host_certificate(cert: asyncssh.SSHCertificate) -> bool:
    try:
        return certs.decode(cert.public_data).cert_type == certs.CERT_TYPE_HOST
    except certs.CertificateRefused:
        return False


def restrict_host_key_algorithms(
        keys: Sequence[asyncssh.SSHKey], allowed: Sequence[str],
        certified: Sequence[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]] = ()) -> list[asyncssh.SSHKeyPair]:
    """Key pairs that sign only with the allowed algorithms; keys left with none are dropped.

    asyncssh offers every algorithm a key can sign with (for RSA also SHA-1 ``ssh-rsa``) and
    has no server option to narrow that, but its key pairs carry the list as an attribute. A
    certificate's algorithm (``…-cert-v01@openssh.com``) is allowed with its plain one.
    """
    wanted = [name.encode("ascii") for name in allowed]
    pairs = []
    seen: set[tuple[bytes, bytes]] = set()
    # asyncssh makes a plain pair as well as the certificate's of each (key, certificate), and
    # refuses two pairs with one algorithm: each pair once.
    for pair in asyncssh.load_keypairs([*keys, *certified]):
        if (pair.algorithm, pair.public_data) in seen:
            continue
        seen.add((pair.algorithm, pair.public_data))
        algs = [alg for alg in pair.host_key_algorithms
                if alg.removesuffix(CERT_ALGORITHM_SUFFIX) in wanted]
        if algs:
            pair.host_key_algorithms = algs
            pairs.append(pair)
    if not pairs:
        raise ConfigError("setting ssh_host_key_algorithms: no host key can sign with "
                          f"{', '.join(allowed)}")
    return pairs
