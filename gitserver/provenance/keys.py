"""The server's signing keys: created by ``gitserver init``, rotated by ``gitserver
signing-key rotate``, published with their validity windows (docs/provenance.md).

``<data>/signing/`` (mode 0700) holds ``keys.json``, the history of every key the server ever
signed with (its public half and validity window), and the private key files of the keys it
made itself. A key kept in an ssh-agent (``GITSERVER_SIGNING_AGENT`` and
``GITSERVER_SIGNING_KEY``) is in the history with no file: the server never reads it. An old key
is never dropped from the history: tags and log entries it signed must keep verifying, and
git hands ``ssh-keygen`` the object's own date as the time to judge the window by.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.provenance import sshsig

log = logging.getLogger(__name__)

HISTORY = "keys.json"
KEY_FILE_PREFIX = "ed25519-"
PRINCIPAL = "gitserver"
# ssh-keygen's allowed-signers times (sshd(8) "AUTHORIZED_KEYS FILE FORMAT"): it refuses ISO 8601.
SSH_TIME_FORMAT = "%Y%m%d%H%M%SZ"


class SigningKeyError(Exception):
    """No usable signing key (message safe to show an operator)."""


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """One key of the history: its public half, its window, its private file (None: agent)."""

    public_key: str
    valid_after: dt.datetime
    valid_before: dt.datetime | None = None
    file: str | None = None

    @property
    def blob(self) -> bytes:
        return sshsig.parse_openssh_line(self.public_key)

    @property
    def fingerprint(self) -> str:
        return sshsig.fingerprint(self.blob)

    def to_json(self) -> dict[str, object]:
        return {"public_key": self.public_key, "valid_after": _iso(self.valid_after),
                "valid_before": _iso(self.valid_before) if self.valid_before else None,
                "file": self.file}

    @classmethod
    def from_json(cls, row: dict[str, object]) -> KeyRecord:
        before = row.get("valid_before")
        return cls(public_key=str(row["public_key"]), valid_after=_parse_iso(str(row["valid_after"])),
                   valid_before=_parse_iso(str(before)) if before else None,
                   file=str(row["file"]) if row.get("file") else None)


def now_second() -> dt.datetime:
    """Now, to the second: git object dates have no fractions, and a window must hold them."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def read_history(signing_dir: Path) -> list[KeyRecord]:
    """Every key, oldest first; empty when the data dir has none yet."""
    try:
        data = json.loads((signing_dir / HISTORY).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"cannot read {signing_dir / HISTORY}: {exc}") from exc
    return [KeyRecord.from_json(row) for row in data.get("keys", [])]


def current(history: list[KeyRecord]) -> KeyRecord | None:
    return next((k for k in reversed(history) if k.valid_before is None), None)


def _write_history(signing_dir: Path, history: list[KeyRecord]) -> None:
    """Replace the history atomically (a reader never sees half a file)."""
    tmp = signing_dir / f".{HISTORY}.tmp"
    tmp.write_text(json.dumps({"keys": [k.to_json() for k in history]}, indent=2) + "\n")
    os.replace(tmp, signing_dir / HISTORY)


def _new_file_key(signing_dir: Path, when: dt.datetime) -> KeyRecord:
    private = Ed25519PrivateKey.generate()
    name = f"{KEY_FILE_PREFIX}{when.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
    path = signing_dir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()))
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyRecord(public_key=sshsig.openssh_line(sshsig.public_blob(raw)), valid_after=when, file=name)


def _agent_key(agent_key: str, when: dt.datetime) -> KeyRecord:
    try:
        blob = sshsig.parse_openssh_line(agent_key)
    except sshsig.SignatureError as exc:
        raise SigningKeyError(f"GITSERVER_SIGNING_KEY: {exc}") from exc
    return KeyRecord(public_key=sshsig.openssh_line(blob), valid_after=when)


def ensure_key(signing_dir: Path, agent_key: str = "") -> list[str]:
    """``init``'s part: a signing dir with a current key (a new file key, or the configured
    agent key when it is not the current one yet); idempotent. What was done, for the CLI."""
    signing_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(signing_dir, 0o700)
    history = read_history(signing_dir)
    now = current(history)
    if now is not None and (not agent_key or _same_key(now.public_key, agent_key)):
        return []
    return [rotate(signing_dir, agent_key)]


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def rotate(signing_dir: Path, agent_key: str = "") -> str:
    """Retire the current key (``valid_before`` = now) and start a new one: a new file key, or
    the agent key ``agent_key`` (which must differ from the current one). One line saying what."""
    signing_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    history = read_history(signing_dir)
    old = current(history)
    when = now_second()
    if old is not None and when <= old.valid_after:
        # Windows must not overlap to the second: wait out the second the old key began in.
        raise SigningKeyError("the current signing key is less than a second old; try again")
    if agent_key and old is not None and _same_key(old.public_key, agent_key):
        raise SigningKeyError("GITSERVER_SIGNING_KEY is the current key already: load the new key "
                              "into the agent and set GITSERVER_SIGNING_KEY to it first")
    new = _agent_key(agent_key, when) if agent_key else _new_file_key(signing_dir, when)
    history = [dataclasses.replace(k, valid_before=when) if k is old else k for k in history]
    _write_history(signing_dir, [*history, new])
    log.info("signing key %s in use from %s", new.fingerprint, _iso(when))
    return f"signing key {new.fingerprint} in use from {_iso(when)}"


def allowed_signers(history: list[KeyRecord]) -> str:
    """git's ``gpg.ssh.allowedSignersFile`` for the history, one line per key."""
    lines = []
    for key in history:
        options = [f'namespaces="{sshsig.NAMESPACE_GIT}"',
                   f'valid-after="{key.valid_after.strftime(SSH_TIME_FORMAT)}"']
        if key.valid_before is not None:
            options.append(f'valid-before="{key.valid_before.strftime(SSH_TIME_FORMAT)}"')
        lines.append(f"{PRINCIPAL} {','.join(options)} {key.public_key}\n")
    return "".join(lines)


def published(history: list[KeyRecord]) -> list[dict[str, object]]:
    """The JSON of ``GET /api/v1/signing-keys``."""
    return [{"fingerprint": k.fingerprint, "public_key": k.public_key, "valid_after": _iso(k.valid_after),
             "valid_before": _iso(k.valid_before) if k.valid_before else None} for k in history]
