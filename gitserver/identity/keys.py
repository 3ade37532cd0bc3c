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
from collections.abc import Iterable, Iterator

from gitserver.policy.errors import InvalidInput

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


def _read_fields(blob: bytes, count: int) -> list[bytes]:
    """Exactly ``count`` SSH wire strings, nothing after them: a key with trailing bytes is
    not the key it claims to be (and two encodings of one key would get two fingerprints)."""
    fields, offset = [], 0
    for _ in range(count):
        value, offset = _read_string(blob, offset)
        fields.append(value)
    if offset != len(blob):
        raise ValueError("unexpected bytes after the key data")
    return fields


# Uncompressed EC points: 0x04 || X || Y, coordinates of the curve's size.
_EC_POINT_LENGTH = {b"nistp256": 65, b"nistp384": 97, b"nistp521": 133}
_ED25519_LENGTH = 32


def _mpint(value: bytes, what: str) -> int:
    if not value or value[0] & 0x80:
        raise ValueError(f"RSA {what} is not a positive integer")
    return int.from_bytes(value, "big")


def _check_blob(key_type: str, blob: bytes) -> int:
    """Check the wire structure of ``blob`` for ``key_type``; returns the key size in bits."""
    if key_type == "ssh-rsa":
        _, exponent, modulus = _read_fields(blob, 3)
        e, n = _mpint(exponent, "exponent"), _mpint(modulus, "modulus")
        if e < 3 or e % 2 == 0:
            raise ValueError("RSA exponent is not valid")
        return n.bit_length()
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        fields = _read_fields(blob, 2 if key_type == "ssh-ed25519" else 3)
        if len(fields[1]) != _ED25519_LENGTH:
            raise ValueError("an ed25519 key is 32 bytes")
        return _FIXED_BITS[key_type]
    # ecdsa-sha2-<curve> and its security-key variant (which carries an application string).
    fields = _read_fields(blob, 3 if key_type.startswith("ecdsa-") else 4)
    curve, point = fields[1], fields[2]
    expected_curve = key_type.split("@")[0].rsplit("-", 1)[1].encode()
    if curve != expected_curve:
        raise ValueError("the curve does not match the key type")
    if len(point) != _EC_POINT_LENGTH[curve] or point[0] != 4:
        raise ValueError("the curve point is not valid")
    return _FIXED_BITS[key_type]


def _refuse(reason: str) -> InvalidInput:
    return InvalidInput(reason, field="key")


def _known_type_later(parts: list[str]) -> bool:
    return any(p in _KEY_TYPES or p == "ssh-dss" for p in parts[1:])


def parse_public_key(text: object) -> PublicKey:
    """Parse one OpenSSH public key line (``type base64 [comment]``) or raise InvalidInput.

    Refuses, with the reason: private keys pasted by mistake (OpenSSH, PEM, PKCS#8, PuTTY),
    DSA, RSA under 2048 bits, certificates, RFC 4716 (``---- BEGIN SSH2 PUBLIC KEY``) blocks,
    ``authorized_keys`` options, unknown types, a type that disagrees with the encoded blob,
    key data that is not a well-formed key of its type, and anything not one line.
    """
    if not isinstance(text, str):
        raise _refuse("key must be a string")
    if len(text) > _MAX_LINE:
        raise _refuse("key is too long to be an OpenSSH public key")
    if "PRIVATE KEY" in text or text.lstrip().startswith("PuTTY-User-Key-File"):
        raise _refuse("this is a private key; paste the public key (the .pub file) instead")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise _refuse("this is an RFC 4716 public key; convert it with 'ssh-keygen -i -f <file>' "
                      "and paste the one-line result")
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise _refuse("key must be a single line")
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise _refuse("key is not in OpenSSH format 'type base64 [comment]'")
    key_type, encoded = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) > 2 else ""
    if key_type == "ssh-dss":
        raise _refuse("DSA keys are not accepted; use ed25519 or RSA of 2048 bits or more")
    if key_type.endswith("-cert-v01@openssh.com"):
        raise _refuse("SSH certificates are not accepted as keys; paste the plain public key")
    if key_type not in _KEY_TYPES:
        if _known_type_later(line.split()):
            raise _refuse("authorized_keys options (like no-pty or command=…) are not accepted; "
                          "paste only 'type base64 [comment]'")
        raise _refuse(f"unsupported key type {key_type[:40]!r}")
    try:
        blob = base64.b64decode(encoded, validate=True)
        embedded_type, _ = _read_string(blob, 0)
        if embedded_type.decode("ascii", "replace") != key_type:
            raise ValueError("key type does not match the key data")
        bits = _check_blob(key_type, blob)
    except (binascii.Error, ValueError) as exc:
        raise _refuse(f"key data is not valid: {exc}") from exc
    if key_type == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise _refuse(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")
    if not _COMMENT_RE.fullmatch(comment):
        comment = comment.encode("ascii", "replace").decode()[:200]
        comment = "".join(c if " " <= c <= "~" else "?" for c in comment)
    return PublicKey(key_type=key_type, blob=blob, comment=comment, bits=bits)


# --- many keys at once (an authorized_keys file) ------------------------------------------------

# One batch: a generous authorized_keys file, and a bound on the work one request can ask for.
MAX_BATCH_KEYS = 100_000


@dataclasses.dataclass(frozen=True)
class KeyLine:
    """One line of a batch: its number (1-based), the key when it parsed, and why it is
    refused ("" when it is not)."""

    line: int
    key: PublicKey | None
    problem: str = ""

    @property
    def refused(self) -> bool:
        return bool(self.problem)


def key_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """The lines of an ``authorized_keys``-like text that should hold a key, stripped, with
    their numbers (from 1): blank lines and ``#`` comments are not keys."""
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def parse_key_lines(lines: list[str]) -> list[KeyLine]:
    """Parse an ``authorized_keys`` file, one :class:`KeyLine` per key line.

    Blank lines and ``#`` comments are skipped (they are not keys). Each other line is parsed
    by :func:`parse_public_key`, so it is refused for the same reasons one key would be; a key
    that appears twice is refused on its second line, naming the first.
    """
    if len(lines) > MAX_BATCH_KEYS:
        raise InvalidInput(f"at most {MAX_BATCH_KEYS:,} keys per batch; split the file", field="keys")
    out: list[KeyLine] = []
    first_line: dict[str, int] = {}
    for number, text in key_lines(lines):
        try:
            key = parse_public_key(text)
        except InvalidInput as exc:
            out.append(KeyLine(number, None, exc.message))
            continue
        seen = first_line.setdefault(key.fingerprint, number)
        if seen != number:
            out.append(KeyLine(number, key, f"the same key as line {seen}"))
        else:
            out.append(KeyLine(number, key))
    return out
