"""SSH public keys as the API and CLI accept them (gitserver.identity.keys): real keys from ssh-keygen
are accepted with ssh-keygen's own fingerprint; everything else is refused with a reason."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from gitserver.identity.keys import parse_public_key
from gitserver.policy.errors import InvalidInput


def keygen(tmp_path: Path, kind: str, bits: int | None = None) -> Path:
    path = tmp_path / f"id_{kind}_{bits}"
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "me@laptop", "-f", str(path)]
    if bits:
        argv += ["-b", str(bits)]
    subprocess.run(argv, check=True)
    return path


def wire(*parts: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(p)) + p for p in parts)).decode()


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("ecdsa", 256), ("ecdsa", 384),
                                            ("ecdsa", 521), ("rsa", 2048)])
def test_real_keys_accepted_with_ssh_keygen_fingerprint(tmp_path: Path, kind: str, bits: int | None) -> None:
    path = keygen(tmp_path, kind, bits)
    key = parse_public_key(path.with_suffix(".pub").read_text())
    expected = subprocess.run(["ssh-keygen", "-lf", str(path.with_suffix(".pub"))], check=True,
                              capture_output=True, text=True).stdout.strip()
    assert key.fingerprint_line() == expected
    assert key.comment == "me@laptop"


@pytest.mark.parametrize(("kind", "bits", "reason"), [
    ("rsa", 1024, "RSA key has 1024 bits; at least 2048 are required"),
])
def test_weak_generated_keys_refused(tmp_path: Path, kind: str, bits: int, reason: str) -> None:
    path = keygen(tmp_path, kind, bits)
    with pytest.raises(InvalidInput, match=reason):
        parse_public_key(path.with_suffix(".pub").read_text())


def test_private_key_pasted_by_mistake_refused(tmp_path: Path) -> None:
    path = keygen(tmp_path, "ed25519")
    with pytest.raises(InvalidInput, match="this is a private key") as info:
        parse_public_key(path.read_text())
    assert info.value.field == "key"
    # The refusal must not echo the secret back.
    assert path.read_text().splitlines()[1] not in info.value.message


ED = "ssh-ed25519"
GOOD_ED_BLOB = wire(ED.encode(), b"\x01" * 32)
P256_POINT = b"\x04" + b"\x02" * 64


@pytest.mark.parametrize(("text", "reason"), [
    (f"ssh-dss {wire(b'ssh-dss', b'p', b'q', b'g', b'y')}", "DSA keys are not accepted"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----", "private key"),
    ("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----", "private key"),
    ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none", "private key"),
    ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----", "RFC 4716"),
    (f'no-pty,command="/bin/sh" {ED} {GOOD_ED_BLOB} x', "authorized_keys options"),
    (f"ssh-ed25519-cert-v01@openssh.com {GOOD_ED_BLOB}", "certificates are not accepted"),
    (f"ssh-foo {GOOD_ED_BLOB}", "unsupported key type"),
    (ED, "not in OpenSSH format"),
    (f"{ED} {GOOD_ED_BLOB}\n{ED} {GOOD_ED_BLOB}", "single line"),
    (f"{ED} not*base64", "key data is not valid"),
    (f"{ED} {wire(b'ssh-rsa', b'x' * 32)}", "does not match"),
    (f"{ED} {wire(ED.encode(), b'x' * 31)}", "32 bytes"),
    (f"{ED} {wire(ED.encode(), b'x' * 32)}AAAA", "key data is not valid"),
    (f"{ED} {base64.b64encode(base64.b64decode(GOOD_ED_BLOB) + b'junk').decode()}", "unexpected bytes"),
    (f"{ED} {GOOD_ED_BLOB[:-8]}", "key data is not valid"),
    (f"ecdsa-sha2-nistp256 {wire(b'ecdsa-sha2-nistp256', b'nistp384', P256_POINT)}", "curve does not match"),
    (f"ecdsa-sha2-nistp256 {wire(b'ecdsa-sha2-nistp256', b'nistp256', P256_POINT[:-1])}", "point"),
    ("ssh-rsa " + wire(b"ssh-rsa", b"\x01\x00\x01", b"\x80" + b"\x00" * 256), "not a positive integer"),
    ("ssh-rsa " + wire(b"ssh-rsa", b"\x02", b"\x00\xc1" + b"\x01" * 256), "exponent"),
    ("x" * 20_000, "too long"),
    (12345, "must be a string"),
])
def test_bad_keys_refused_with_reason(text: object, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        parse_public_key(text)
    assert info.value.field == "key"


def test_hostile_comment_is_made_printable() -> None:
    key = parse_public_key(f"{ED} {GOOD_ED_BLOB} evil\x1b[31m comment ☃")
    assert key.comment.isprintable() and key.comment.isascii()
