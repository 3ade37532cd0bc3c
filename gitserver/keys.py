"""OpenSSH public keys: parse an ``authorized_keys`` line, fingerprint it like ``ssh-keygen -lf``.

Pure functions over bytes; no SSH library needed, so the API, the CLI and the SSH daemon agree
on one fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
import struct

from gitserver.errors import InvalidInput

MIN_RSA_BITS = 2048
# Key types we accept, each with the number of bits its fingerprint line shows.
_FIXED_BITS = {
    "ssh-ed25519": 256,
    "sk-ssh-ed25519@openssh.com": 256,
    "ecdsa-sha2-nistp256": 256,
    "ecdsa-sha2-nistp384": 384,
    "ecdsa-sha2-nistp521": 521,
    "sk-ecdsa-sha2-nistp256@openssh.com": 256,
}
_KEY_TYPES = set(_FIXED_BITS) | {"ssh-rsa"}
_DISPLAY_TYPE = {"ssh-rsa": "RSA", "ssh-ed25519": "ED25519", "sk-ssh-ed25519@openssh.com": "ED25519-SK",
                 "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK"}
_MAX_LINE = 16 * 1024
_COMMENT_RE = re.compile(r"^[\x20-\x7e]{0,200}$")


@dataclasses.dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: bytes
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64 without padding>``, exactly as ``ssh-keygen -lf`` prints it."""
        return fingerprint_of_blob(self.blob)

    @property
    def openssh(self) -> str:
        """The key as an ``authorized_keys`` line without options."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line

    @property
    def display_type(self) -> str:
        return _DISPLAY_TYPE.get(self.key_type, "ECDSA")

    def fingerprint_line(self) -> str:
        """Like ``ssh-keygen -lf``: ``256 SHA256:… comment (ED25519)``."""
        comment = self.comment or "no comment"
        return f"{self.bits} {self.fingerprint} {comment} ({self.display_type})"


def fingerprint_of_blob(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated key data")
    (length,) = struct.unpack(">I", blob[offset:offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated key data")
    return blob[offset + 4:end], end


def _rsa_bits(blob: bytes) -> int:
    _, off = _read_string(blob, 0)
    _exponent, off = _read_string(blob, off)
    modulus, off = _read_string(blob, off)
    return int.from_bytes(modulus, "big").bit_length()


def parse_public_key(text: object) -> PublicKey:
    """Parse one OpenSSH public key line (``type base64 [comment]``) or raise InvalidInput.

    Refuses, with the reason: private keys pasted by mistake, DSA, RSA under 2048 bits,
    unknown types, a type that disagrees with the encoded blob, and anything not one line.
    """
    if not isinstance(text, str):
        raise InvalidInput("key must be a string", field="key")
    if len(text) > _MAX_LINE:
        raise InvalidInput("key is too long to be an OpenSSH public key", field="key")
    if "PRIVATE KEY" in text:
        raise InvalidInput("this is a private key; paste the public key (the .pub file) instead",
                           field="key")
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise InvalidInput("key must be a single line", field="key")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise InvalidInput("key is not in OpenSSH format 'type base64 [comment]'", field="key")
    key_type, encoded = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) > 2 else ""
    if key_type == "ssh-dss":
        raise InvalidInput("DSA keys are not accepted; use ed25519 or RSA of 2048 bits or more",
                           field="key")
    if key_type not in _KEY_TYPES:
        raise InvalidInput(f"unsupported key type {key_type[:40]!r}", field="key")
    try:
        blob = base64.b64decode(encoded, validate=True)
        embedded_type, _ = _read_string(blob, 0)
        if embedded_type.decode("ascii", "replace") != key_type:
            raise ValueError("key type does not match the key data")
        bits = _rsa_bits(blob) if key_type == "ssh-rsa" else _FIXED_BITS[key_type]
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"key data is not valid: {exc}", field="key") from exc
    if key_type == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise InvalidInput(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required",
                           field="key")
    if not _COMMENT_RE.fullmatch(comment):
        comment = comment.encode("ascii", "replace").decode()[:200]
        comment = "".join(c if " " <= c <= "~" else "?" for c in comment)
    return PublicKey(key_type=key_type, blob=blob, comment=comment, bits=bits)
