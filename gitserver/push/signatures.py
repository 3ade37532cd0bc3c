"""Verifying commit and tag signatures (docs/ref-rules.md): git's SSH signatures
(``gpg.format=ssh``) with the ``sshsig`` library for ed25519 and RSA keys and ``ssh-keygen -Y
verify`` for every other kind, OpenPGP ones with ``gpg --verify``.

``sshsig`` checks an SSHSIG in-process (about 0.15 ms) where one ``ssh-keygen`` costs about
6.5 ms of CPU, which is what lets a push of a thousand signed commits stay within its budget;
a signature it cannot read (ECDSA, security keys) goes to ``ssh-keygen``, which stays the
reference.

Nothing here parses a signature: git's own object format says where the signature is (pygit2's
``Commit.gpg_signature`` for commits; for tags, the armored block git appends to the message),
and the tools decide whether it is valid. A signature counts when it is valid for a key
registered to a user of the tenant and one of that user's emails is the committer's (the
tagger's, for a tag):

- SSH: the signature must verify, in git's namespace, for one of the keys registered to the
  user with the committer's email (``sshsig.verify`` with exactly those keys; for
  ``ssh-keygen``, an allowed-signers file listing each key with its user's emails as principals,
  and ``-I <committer email> -n git``);
- GPG: a keyring of the tenant's registered GPG keys verifies the signature, and the primary
  fingerprint gpg reports (``VALIDSIG``) must belong to a user with the committer's email.

One :class:`Verifier` serves one push: it writes its allowed-signers file and keyring into a
private temporary directory once, and verifies each commit with one child process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import sshsig

from gitserver.push.rules import BAD, SIGNED, UNSIGNED

log = logging.getLogger(__name__)

SSH_SIGNATURE_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
PGP_SIGNATURE_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
SIGNATURE_BEGINS = (SSH_SIGNATURE_BEGIN, PGP_SIGNATURE_BEGIN)
GIT_NAMESPACE = "git"  # the namespace git signs with (gpg.ssh)
VERIFY_TIMEOUT = 30.0
GPG_VALIDSIG = "[GNUPG:] VALIDSIG "


class SshSigner(NamedTuple):
    """A registered SSH key (``type base64``) and the emails of its user."""

    key: str
    emails: tuple[str, ...]


class GpgSigner(NamedTuple):
    """A registered GPG key: its primary fingerprint, armored key and its user's emails."""

    fingerprint: str
    armored: str
    emails: tuple[str, ...]


def allowed_signers(signers: Iterable[SshSigner]) -> str:
    """The allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS) of ``signers``: one line per
    key, its user's emails as principals, for git's namespace only. Emails were validated when
    set (gitserver.admin.signing.validate_email): no pattern characters, no commas, no quotes."""
    return "".join(f"{','.join(s.emails)} namespaces=\"{GIT_NAMESPACE}\" {s.key}\n"
                   for s in signers if s.emails)


def gpg_available() -> bool:
    return shutil.which("gpg") is not None


class Verifier:
    """Verifies the signatures of one push against the tenant's registered keys."""

    def __init__(self, ssh: Iterable[SshSigner], gpg: Iterable[GpgSigner] = (),
                 owners: Mapping[str, str] | None = None) -> None:
        self._owners = dict(owners or {})  # email -> the name of the user it belongs to
        self._dir = Path(tempfile.mkdtemp(prefix="gitserver-sig-"))
        self._ssh = list(ssh)
        self._allowed: Path | None = None  # written when ssh-keygen is first needed
        self._keys_by_email: dict[str, list[sshsig.PublicKey]] = {}
        for signer in self._ssh:
            key = _library_key(signer.key)
            if key is None:
                continue  # ssh-keygen checks signatures by it (see _ssh_valid)
            for email in signer.emails:
                self._keys_by_email.setdefault(email, []).append(key)
        self._gpg = list(gpg)
        self._gpg_emails = {s.fingerprint.upper(): set(s.emails) for s in self._gpg}
        self._gpg_home: Path | None = None

    def signer(self, email: str) -> str:
        """The user a valid signature with committer ``email`` was made by (emails are unique
        within a tenant)."""
        return self._owners.get(email, "")

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(self, signature: bytes | None, payload: bytes, email: str) -> str:
        """SIGNED, UNSIGNED or BAD for ``signature`` over ``payload`` by ``email``'s keys."""
        if not signature:
            return UNSIGNED
        if signature.lstrip().startswith(SSH_SIGNATURE_BEGIN):
            return SIGNED if self._ssh_valid(signature, payload, email) else BAD
        if signature.lstrip().startswith(PGP_SIGNATURE_BEGIN):
            return SIGNED if self._pgp(signature, payload, email) else BAD
        return BAD  # X.509 (gpgsm) and anything else: no registered key can vouch for it

    def _ssh_valid(self, signature: bytes, payload: bytes, email: str) -> bool:
        if not email:
            return False
        try:
            sshsig.verify(payload, signature, self._keys_by_email.get(email, []), namespace=GIT_NAMESPACE)
        except NotImplementedError:  # a key type or encoding the library does not read
            return self._ssh_keygen(signature, payload, email)
        except (sshsig.InvalidSignature, ValueError):
            return False
        return True

    def _ssh_keygen(self, signature: bytes, payload: bytes, email: str) -> bool:
        if self._allowed is None:
            self._allowed = self._write("allowed_signers", allowed_signers(self._ssh).encode())
        if not self._allowed.stat().st_size:
            return False
        sig = self._write("sig", signature)
        argv = ["ssh-keygen", "-Y", "verify", "-f", str(self._allowed), "-I", email,
                "-n", GIT_NAMESPACE, "-s", str(sig)]
        return _run(argv, payload) is not None

    def _pgp(self, signature: bytes, payload: bytes, email: str) -> bool:
        home = self._keyring()
        if home is None or not email:
            return False
        sig = self._write("sig.asc", signature)
        data = self._write("data", payload)
        out = _run(["gpg", "--homedir", str(home), "--batch", "--no-autostart", "--no-tty",
                    "--status-fd", "1", "--trust-model", "always", "--verify", str(sig), str(data)], b"")
        if out is None:
            return False
        for line in out.splitlines():
            if line.startswith(GPG_VALIDSIG):
                fields = line[len(GPG_VALIDSIG):].split()
                primary = (fields[9] if len(fields) > 9 else fields[0]).upper()
                return email in self._gpg_emails.get(primary, set())
        return False

    def _keyring(self) -> Path | None:
        """The tenant's GPG keys imported into a keyring of this push's own (once)."""
        if not self._gpg or not gpg_available():
            return None
        if self._gpg_home is None:
            home = self._dir / "gnupg"
            home.mkdir(mode=0o700)
            armored = "\n".join(s.armored for s in self._gpg).encode()
            _run(["gpg", "--homedir", str(home), "--batch", "--no-autostart", "--quiet", "--import"], armored)
            self._gpg_home = home
        return self._gpg_home

    def _write(self, name: str, data: bytes) -> Path:
        path = self._dir / name
        path.write_bytes(data)
        return path


def _library_key(line: str) -> sshsig.PublicKey | None:
    """``type base64`` as the library's key, or None for a type it does not read."""
    try:
        return sshsig.PublicKey.from_openssh_str(line)
    except (NotImplementedError, ValueError):
        return None


def _run(argv: list[str], stdin: bytes) -> str | None:
    """The child's output when it exits 0, else None (a refusal; the reason is logged)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, timeout=VERIFY_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("signature check %s could not run: %s", argv[0], exc)
        return None
    if result.returncode != 0:
        log.debug("%s refused a signature: %s", argv[0], result.stderr.decode("utf-8", "replace").strip())
        return None
    return result.stdout.decode("utf-8", "replace")


def split_tag(raw: bytes) -> tuple[bytes | None, bytes]:
    """(signature, signed payload) of a raw tag object. git appends the armored signature to
    the tag's message and signs what comes before it (git's ``parse_signed_buffer``: the
    last line that begins a signature block)."""
    start = -1
    for begin in SIGNATURE_BEGINS:
        with contextlib.suppress(ValueError):
            at = raw.rindex(b"\n" + begin)
            start = max(start, at + 1)
    if start < 0:
        return None, raw
    return raw[start:], raw[:start]


def tag_tagger_email(raw: bytes) -> str:
    """The tagger's email of a raw tag object (its ``tagger`` header), or ""."""
    header = raw.split(b"\n\n", 1)[0]
    for line in header.split(b"\n"):
        if line.startswith(b"tagger "):
            text = line.decode("utf-8", "replace")
            return text[text.find("<") + 1: text.find(">")] if "<" in text else ""
    return ""


