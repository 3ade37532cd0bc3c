"""The keys a verifier trusts: an allowed-signers file (git's ``gpg.ssh.allowedSignersFile``
format, as ``GET /api/v1/signing-keys/allowed_signers`` serves it) or the server's own key
history, and the check of one SSH signature against them at a given time (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from gitserver.provenance import keys, sshsig


@dataclasses.dataclass(frozen=True)
class TrustedKey:
    blob: bytes
    valid_after: dt.datetime | None = None
    valid_before: dt.datetime | None = None

    def covers(self, when: dt.datetime) -> bool:
        return ((self.valid_after is None or self.valid_after <= when)
                and (self.valid_before is None or when <= self.valid_before))


class TrustError(ValueError):
    """An allowed-signers file that cannot be read."""


_TIME_RE = re.compile(r"^(\d{8})(\d{4})?(\d{2})?Z?$")
_OPTION_RE = re.compile(r'([A-Za-z-]+)(?:="([^"]*)")?')


def _parse_time(text: str) -> dt.datetime:
    """ssh-keygen's ``YYYYMMDD[HHMM[SS]][Z]`` (taken as UTC)."""
    match = _TIME_RE.match(text)
    if not match:
        raise TrustError(f"bad time {text!r} in allowed-signers file")
    day, hm, sec = match.groups()
    return dt.datetime.strptime(day + (hm or "0000") + (sec or "00"), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def parse_allowed_signers(text: str) -> list[TrustedKey]:
    """The ed25519 keys of an allowed-signers file that may sign for namespace ``git``."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        rest = parts[1] if len(parts) > 1 else ""
        options: dict[str, str] = {}
        if not rest.startswith(sshsig.KEY_TYPE) and not rest.startswith("ecdsa") and not rest.startswith("ssh-"):
            option_text, _, rest = rest.partition(" ")
            options = {m.group(1).lower(): m.group(2) or "" for m in _OPTION_RE.finditer(option_text)}
        if not rest.startswith(sshsig.KEY_TYPE + " "):
            continue  # other key types: never ours
        namespaces = options.get("namespaces")
        if namespaces is not None and sshsig.NAMESPACE_GIT not in namespaces.split(","):
            continue
        try:
            blob = sshsig.parse_openssh_line(rest)
            found.append(TrustedKey(blob,
                                    _parse_time(options["valid-after"]) if "valid-after" in options else None,
                                    _parse_time(options["valid-before"]) if "valid-before" in options else None))
        except (sshsig.SignatureError, TrustError) as exc:
            raise TrustError(f"allowed-signers line {number}: {exc}") from exc
    return found


def from_history(history: list[keys.KeyRecord]) -> list[TrustedKey]:
    return [TrustedKey(k.blob, k.valid_after, k.valid_before) for k in history]


def signature_problem(trusted: list[TrustedKey], armored: str, payload: bytes, when: dt.datetime) -> str | None:
    """Why the SSH signature ``armored`` over ``payload``, dated ``when``, is not one of a
    trusted key in its window; None when it is."""
    try:
        parsed = sshsig.verify(armored, payload)
    except sshsig.SignatureError as exc:
        return f"bad signature ({exc})"
    mine = [k for k in trusted if k.blob == parsed.public_blob]
    fingerprint = sshsig.fingerprint(parsed.public_blob)
    if not mine:
        return f"signed by {fingerprint}, which is not a trusted key"
    if not any(k.covers(when) for k in mine):
        return f"signed by {fingerprint} at {when:%Y-%m-%dT%H:%M:%SZ}, outside that key's validity window"
    return None


def earliest(trusted: list[TrustedKey]) -> dt.datetime | None:
    """When signing began: the first key's ``valid_after`` (None: no window known)."""
    starts = [k.valid_after for k in trusted if k.valid_after is not None]
    return min(starts) if starts else None
