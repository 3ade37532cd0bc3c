"""Which SSH algorithms the daemon offers: OpenSSH 9's defaults, without repeats, configurable.

Each list is a setting (``ssh_ciphers``, ``ssh_kex_algorithms``, ``ssh_macs``,
``ssh_host_key_algorithms``, ``ssh_pubkey_algorithms``) checked when the configuration is
loaded, so a typo stops the process at start instead of locking clients out at their first
connection. asyncssh's own defaults are not used as they are:

- asyncssh 2.24 builds its default signature list as ``allowed + default``, so the
  ``server-sig-algs`` extension names every algorithm twice; libgit2 (pygit2 1.21, libssh2)
  then corrupts its heap when it authenticates with an RSA key. The daemon passes its own list.
- asyncssh also offers legacy key exchanges (``diffie-hellman-group14-sha1``,
  ``…-group1-sha1``) and ``@ssh.com`` MACs that OpenSSH 9 no longer offers by default.
- Clients choose: the first algorithm on the client's list that the server offers wins
  (RFC 4253 7.1), so the server's order only documents preference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol

from gitserver.policy.errors import ConfigError

# AES-GCM runs in OpenSSL with AES-NI and needs no separate MAC. AES-CTR is for clients that
# have no GCM: JSch 0.1.54 (Jenkins agents, Eclipse), old libssh2. chacha20-poly1305 is left
# out: asyncssh computes Poly1305 in Python per packet, the most CPU per byte of all.
DEFAULT_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                   "aes128-ctr", "aes192-ctr", "aes256-ctr")
# OpenSSH 9's KexAlgorithms, with the post-quantum hybrids asyncssh implements (ML-KEM) in
# place of OpenSSH's sntrup761, which asyncssh lacks.
DEFAULT_KEX = ("mlkem768x25519-sha256", "mlkem768nistp256-sha256", "mlkem1024nistp384-sha384",
               "curve25519-sha256", "curve25519-sha256@libssh.org",
               "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
               "diffie-hellman-group-exchange-sha256",
               "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
               "diffie-hellman-group14-sha256")
# OpenSSH 9's MACs (used only with AES-CTR; GCM carries its own tag). hmac-sha1 is still among
# them: an HMAC does not depend on SHA-1's collision resistance.
DEFAULT_MACS = ("umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
                "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
                "hmac-sha1-etm@openssh.com", "umac-64@openssh.com", "umac-128@openssh.com",
                "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1")
# OpenSSH 9's HostKeyAlgorithms without certificates: no SHA-1 "ssh-rsa" host signatures.
# A JSch 0.1.54 client therefore verifies the ECDSA host key, which it supports.
DEFAULT_HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                               "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256")
# Signatures accepted from users' keys, as announced in server-sig-algs. OpenSSH 9's
# PubkeyAcceptedAlgorithms plus "ssh-rsa" last: JSch before 0.1.55 and other clients of that
# era sign with RSA/SHA-1 only, and a user's RSA key is what those installs carry.
DEFAULT_PUBKEY_ALGORITHMS = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com",
                             "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                             "sk-ecdsa-sha2-nistp256@openssh.com",
                             "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


@dataclasses.dataclass(frozen=True)
class Algorithms:
    """The lists handed to asyncssh, each without repeats."""

    encryption: list[str]
    kex: list[str]
    mac: list[str]
    host_key: list[str]
    signature: list[str]


def select(setting: str, configured: Sequence[str], default: Sequence[str],
           available: Iterable[str]) -> list[str]:
    """The list to offer for one setting: configured names in order, once each.

    An operator's list must name only algorithms this asyncssh implements (a clear error
    otherwise). The built-in default is trimmed to what is available instead, so an install
    whose cryptography library lacks, say, ML-KEM still starts.
    """
    known = set(available)
    if tuple(configured) == tuple(default):
        chosen = [name for name in default if name in known]
    else:
        unknown = [name for name in configured if name not in known]
        if unknown:
            raise ConfigError(f"setting {setting}: unsupported algorithm {unknown[0]!r} "
                              f"(supported: {', '.join(sorted(known))})")
        chosen = list(configured)
    if not chosen:
        raise ConfigError(f"setting {setting}: give at least one algorithm")
    return list(dict.fromkeys(chosen))


def available() -> dict[str, list[str]]:
    """What the installed asyncssh implements, per setting."""
    from gitserver.process import depwarnings

    depwarnings.quiet()  # asyncssh is imported here first when a config is loaded
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs
    from asyncssh.public_key import get_public_key_algs

    def names(algs: Iterable[bytes]) -> list[str]:
        return [alg.decode("ascii") for alg in algs]

    # GSS key exchanges need Kerberos credentials the daemon never has.
    kex = [name for name in names(get_kex_algs()) if not name.startswith("gss-")]
    return {"ssh_ciphers": names(get_encryption_algs()), "ssh_kex_algorithms": kex,
            "ssh_macs": names(get_mac_algs()),
            "ssh_host_key_algorithms": names(get_public_key_algs()),
            "ssh_pubkey_algorithms": names(get_public_key_algs())}


def resolve(ciphers: Sequence[str], kex: Sequence[str], macs: Sequence[str],
            host_key: Sequence[str], pubkey: Sequence[str]) -> Algorithms:
    """Check every configured list against asyncssh; raises ConfigError naming the setting."""
    have = available()
    return Algorithms(
        encryption=select("ssh_ciphers", ciphers, DEFAULT_CIPHERS, have["ssh_ciphers"]),
        kex=select("ssh_kex_algorithms", kex, DEFAULT_KEX, have["ssh_kex_algorithms"]),
        mac=select("ssh_macs", macs, DEFAULT_MACS, have["ssh_macs"]),
        host_key=select("ssh_host_key_algorithms", host_key, DEFAULT_HOST_KEY_ALGORITHMS,
                        have["ssh_host_key_algorithms"]),
        signature=select("ssh_pubkey_algorithms", pubkey, DEFAULT_PUBKEY_ALGORITHMS,
                         have["ssh_pubkey_algorithms"]))


class Settings(Protocol):
    """The settings that name the algorithms (gitserver.config.Config has them)."""


    @property
    def ssh_ciphers(self) -> tuple[str, ...]: ...

    @property
    def ssh_kex_algorithms(self) -> tuple[str, ...]: ...

    @property
    def ssh_macs(self) -> tuple[str, ...]: ...

    @property
    def ssh_host_key_algorithms(self) -> tuple[str, ...]: ...

    @property
    def ssh_pubkey_algorithms(self) -> tuple[str, ...]: ...


def of_config(config: Settings) -> Algorithms:
    """The SSH daemon's algorithm lists of ``config``, checked against the installed asyncssh."""
    return resolve(config.ssh_ciphers, config.ssh_kex_algorithms, config.ssh_macs,
                   config.ssh_host_key_algorithms, config.ssh_pubkey_algorithms)


def algorithm_options(config: Settings) -> dict[str, list[str]]:
    """asyncssh's algorithm arguments, every list explicit and without repeats.

    ``signature_algs`` must be given: asyncssh's default repeats every algorithm in
    ``server-sig-algs``, which crashes libgit2 clients with RSA keys (see above).
    """
    algs = of_config(config)
    return {"encryption_algs": algs.encryption, "kex_algs": algs.kex, "mac_algs": algs.mac,
            "signature_algs": algs.signature}
