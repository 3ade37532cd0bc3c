"""Revoked SSH keys and certificates: OpenSSH's KRL format, or a plain list of public keys.

asyncssh cannot read KRLs, and asking ``ssh-keygen -Q`` at every login would cost a process
per login; so the format (OpenSSH's PROTOCOL.krl) is parsed here, once per change of the file,
into sets that a login looks up. A unit test checks the answers against ``ssh-keygen -Q``.

What a KRL revokes, as sshd reads it: a certificate by its CA and serial (single, range or
bitmap), by its CA and key id (a KRL may also name no CA: any CA), or a key (of a certificate,
or a CA's) by its blob or its SHA-1 / SHA-256 hash. A certificate with serial 0 is never
revoked by serial (0 is what a CA that sets none gives every certificate), like sshd.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

KRL_MAGIC = b"SSHKRL\n\x00"
KRL_FORMAT_VERSION = 1
# Section types (PROTOCOL.krl).
SECTION_CERTIFICATES = 1
SECTION_EXPLICIT_KEY = 2
SECTION_FINGERPRINT_SHA1 = 3
SECTION_SIGNATURE = 4
SECTION_FINGERPRINT_SHA256 = 5
# Certificate subsections.
CERT_SERIAL_LIST = 0x20
CERT_SERIAL_RANGE = 0x21
CERT_SERIAL_BITMAP = 0x22
CERT_KEY_ID = 0x23
ANY_CA = b""  # a certificates section with an empty CA key applies to every CA
# A bitmap section's bits become serials one by one: bound what one file may ask for.
MAX_BITMAP_SERIALS = 1_000_000


class KrlError(ValueError):
    """The file is not a KRL (or a key list) this parser can read; the message says where."""


@dataclasses.dataclass
class _CaRevocations:
    serials: set[int] = dataclasses.field(default_factory=set)
    ranges: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    key_ids: set[str] = dataclasses.field(default_factory=set)

    def serial_revoked(self, serial: int) -> bool:
        return serial in self.serials or any(low <= serial <= high for low, high in self.ranges)


@dataclasses.dataclass
class Revoked:
    """What one revocation file refuses; empty when none is configured."""

    keys: set[bytes] = dataclasses.field(default_factory=set)  # public key blobs
    sha1: set[bytes] = dataclasses.field(default_factory=set)
    sha256: set[bytes] = dataclasses.field(default_factory=set)
    by_ca: dict[bytes, _CaRevocations] = dataclasses.field(default_factory=dict)

    def key_revoked(self, blob: bytes) -> bool:
        """Whether a plain public key (a user's, a certificate's own key, or a CA) is revoked."""
        return (blob in self.keys or hashlib.sha1(blob).digest() in self.sha1  # the KRL's own hash
                or hashlib.sha256(blob).digest() in self.sha256)

    def certificate_revoked(self, ca_blob: bytes, serial: int, key_id: str) -> bool:
        """Whether the certificate of ``ca_blob`` with this serial and key id is revoked."""
        for ca in (ca_blob, ANY_CA):
            found = self.by_ca.get(ca)
            if found is None:
                continue
            if key_id in found.key_ids or (serial != 0 and found.serial_revoked(serial)):
                return True
        return False


class _Reader:
    """SSH wire encoding (RFC 4251): bytes, uint32, uint64, string."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def more(self) -> bool:
        return self.offset < len(self.data)

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise KrlError(f"{self.what}: truncated at byte {self.offset}")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())


def parse_krl(data: bytes) -> Revoked:
    """Parse a binary KRL (``ssh-keygen -k``); KrlError saying what is wrong."""
    reader = _Reader(data, "KRL")
    if reader.take(len(KRL_MAGIC)) != KRL_MAGIC:
        raise KrlError("not an OpenSSH KRL (bad magic)")
    version = reader.uint32()
    if version != KRL_FORMAT_VERSION:
        raise KrlError(f"KRL format version {version} is not supported (only {KRL_FORMAT_VERSION})")
    reader.uint64()  # krl_version
    reader.uint64()  # generated_date
    reader.uint64()  # flags
    reader.string()  # reserved
    reader.string()  # comment
    revoked = Revoked()
    while reader.more():
        kind = reader.byte()
        body = _Reader(reader.string(), f"KRL section {kind}")
        if kind == SECTION_CERTIFICATES:
            _certificates(body, revoked)
        elif kind == SECTION_EXPLICIT_KEY:
            revoked.keys.update(_strings(body))
        elif kind == SECTION_FINGERPRINT_SHA1:
            revoked.sha1.update(_strings(body))
        elif kind == SECTION_FINGERPRINT_SHA256:
            revoked.sha256.update(_strings(body))
        elif kind == SECTION_SIGNATURE:
            break  # signatures close the file; gitserver trusts the file, not a signer
        else:
            raise KrlError(f"unknown KRL section type {kind}")
    return revoked


def _strings(reader: _Reader) -> Iterable[bytes]:
    while reader.more():
        yield reader.string()


def _certificates(reader: _Reader, revoked: Revoked) -> None:
    ca_key = reader.string()
    reader.string()  # reserved
    found = revoked.by_ca.setdefault(ca_key, _CaRevocations())
    while reader.more():
        kind = reader.byte()
        body = _Reader(reader.string(), f"KRL certificate subsection {kind}")
        if kind == CERT_SERIAL_LIST:
            while body.more():
                found.serials.add(body.uint64())
        elif kind == CERT_SERIAL_RANGE:
            low, high = body.uint64(), body.uint64()
            found.ranges.append((low, high))
        elif kind == CERT_SERIAL_BITMAP:
            offset = body.uint64()
            found.serials.update(offset + bit for bit in _bits(body.string()))
        elif kind == CERT_KEY_ID:
            found.key_ids.update(s.decode("utf-8", "replace") for s in _strings(body))
        else:
            raise KrlError(f"unknown KRL certificate subsection type {kind:#x}")


def _bits(mpint: bytes) -> list[int]:
    """The set bits of an SSH mpint, least significant first (bit 0 = the offset's serial)."""
    value = int.from_bytes(mpint, "big")
    if value.bit_length() > MAX_BITMAP_SERIALS:
        raise KrlError(f"a KRL serial bitmap longer than {MAX_BITMAP_SERIALS} bits")
    return [bit for bit in range(value.bit_length()) if value >> bit & 1]


def parse_key_list(text: str) -> Revoked:
    """A text file of OpenSSH public keys, one per line (``#`` comments and blank lines
    skipped), as sshd's RevokedKeys takes; KrlError naming the line that is not a key."""
    import asyncssh  # the SSH daemon has it loaded already

    revoked = Revoked()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            revoked.keys.add(asyncssh.import_public_key(stripped).public_data)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise KrlError(f"line {number} is not an OpenSSH public key: {exc}") from exc
    return revoked


def parse_revoked(data: bytes) -> Revoked:
    """A KRL, or else a key list."""
    if data.startswith(KRL_MAGIC):
        return parse_krl(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KrlError("neither an OpenSSH KRL nor a text list of public keys") from exc
    return parse_key_list(text)


class RevocationFile:
    """The revocation file of ``GITSERVER_SSH_REVOKED_KEYS``, re-read when it changes.

    :meth:`current` looks at the file's inode, size and modification time at every call (one
    ``stat``) and parses it again when any moved. A file that cannot be read or parsed refuses
    every key (raises KrlError): logins stop rather than let a revoked key in, as sshd does.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._stamp: tuple[int, int, int] | None = None
        self._revoked = Revoked()

    def current(self) -> Revoked:
        if self.path is None:
            return self._revoked
        try:
            info = os.stat(self.path)
        except OSError as exc:
            raise KrlError(f"cannot read the revoked keys file {self.path}: {exc.strerror}") from exc
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            try:
                revoked = parse_revoked(self.path.read_bytes())
            except OSError as exc:
                raise KrlError(f"cannot read the revoked keys file {self.path}: {exc.strerror}") from exc
            except KrlError as exc:
                raise KrlError(f"revoked keys file {self.path}: {exc}") from exc
            self._revoked, self._stamp = revoked, stamp
            log.info("read the revoked keys file %s", self.path)
        return self._revoked
