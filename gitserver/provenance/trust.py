"""The keys a verifier trusts: an allowed-signers file (git's ``gpg.ssh.allowedSignersFile``
format, as ``GET /api/v1/signing-keys/allowed_signers`` serves it) or the server's own key
history, and the check of one SSH signature against them at a given time (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Sequence

from gitserver.provenance import ed25519, keys, sshsig


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


@dataclasses.dataclass(frozen=True)
class Signed:
    """An SSH signature to judge: the armoured signature, what it signs, the signed object's date."""

    armored: str
    payload: bytes
    when: dt.datetime


def signature_problem(trusted: list[TrustedKey], armored: str, payload: bytes, when: dt.datetime) -> str | None:
    """Why the SSH signature ``armored`` over ``payload``, dated ``when``, is not one of a
    trusted key in its window; None when it is."""
    return signature_problems(trusted, [Signed(armored, payload, when)])[0]


def signature_problems(trusted: list[TrustedKey], items: Sequence[Signed]) -> list[str | None]:
    """:func:`signature_problem` of each item, in order, the signatures checked all at once."""
    with ed25519.Checker() as checker:
        return judge(trusted, items, checker)()


Problems = Callable[[], list[str | None]]


def judge(trusted: list[TrustedKey], items: Sequence[Signed], checker: ed25519.Checker) -> Problems:
    """:func:`signature_problem` of each item, their signatures handed to ``checker``: a
    function that waits for them and answers the problems in order (a long reference log is
    tens of thousands of signatures: the caller goes on with its other checks meanwhile)."""
    prepared: list[sshsig.Parsed | str] = []
    batch = ed25519.Batch(checker)
    for item in items:
        try:
            parsed, check = sshsig.prepare(item.armored, item.payload)
        except sshsig.SignatureError as exc:
            prepared.append(f"bad signature ({exc})")
            continue
        prepared.append(parsed)
        batch.append(check)
    results = batch.results()

    def problems() -> list[str | None]:
        verdicts = iter(results())
        found: list[str | None] = []
        for item, parsed in zip(items, prepared, strict=True):
            if isinstance(parsed, str):
                found.append(parsed)
            elif not next(verdicts):
                found.append(f"bad signature ({sshsig.DOES_NOT_VERIFY})")
            else:
                found.append(_key_problem(trusted, parsed.public_blob, item.when))
        return found
    return problems


def _key_problem(trusted: list[TrustedKey], blob: bytes, when: dt.datetime) -> str | None:
    """Why a good signature by ``blob`` at ``when`` is still not trusted; None when it is."""
    mine = [k for k in trusted if k.blob == blob]
    if not mine:
        return f"signed by {sshsig.fingerprint(blob)}, which is not a trusted key"
    if not any(k.covers(when) for k in mine):
        return (f"signed by {sshsig.fingerprint(blob)} at {when:%Y-%m-%dT%H:%M:%SZ}, "
                "outside that key's validity window")
    return None


def earliest(trusted: list[TrustedKey]) -> dt.datetime | None:
    """When signing began: the first key's ``valid_after`` (None: no window known)."""
    starts = [k.valid_after for k in trusted if k.valid_after is not None]
    return min(starts) if starts else None
