"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1) holding in-toto Statements,
signed with the server's key: a raw ed25519 signature over the pre-authentication encoding,
``keyid`` the key's SHA256 fingerprint, payload and signatures in standard base64 (pure, but
for the signer it is handed)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from gitserver.provenance import ed25519, sshsig
from gitserver.provenance import signer as signing

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PAE_PREFIX = b"DSSEv1"


class EnvelopeError(ValueError):
    """An envelope that is malformed or whose signature does not verify."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b" ".join([PAE_PREFIX, str(len(kind)).encode(), kind, str(len(payload)).encode(), payload])


def envelope(key: signing.Signer, statement: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": signing.fingerprint(key), "sig": base64.b64encode(signature).decode()}]}


def open_envelope(env: Any, blobs: list[bytes]) -> dict[str, Any]:
    """The Statement of ``env`` once one of its signatures verifies with a key of ``blobs``."""
    opened = open_envelopes([env], blobs)[0]
    if isinstance(opened, EnvelopeError):
        raise opened
    return opened


def open_envelopes(envs: Sequence[Any], blobs: list[bytes]) -> list[dict[str, Any] | EnvelopeError]:
    """:func:`open_envelope` of each envelope, in order (its Statement, or why not), the
    signatures checked all at once."""
    with ed25519.Checker() as checker:
        return opener(envs, blobs, checker)()


Opened = Callable[[], list[dict[str, Any] | EnvelopeError]]


def opener(envs: Sequence[Any], blobs: list[bytes], checker: ed25519.Checker) -> Opened:
    """:func:`open_envelopes`, the signatures handed to ``checker``: a function that waits
    for them and answers each envelope's Statement or why not, in order."""
    by_id = {sshsig.fingerprint(b): sshsig.raw_public_key(b) for b in blobs}
    parsed: list[tuple[dict[str, Any] | EnvelopeError, range] | EnvelopeError] = []
    batch = ed25519.Batch(checker)
    for env in envs:
        try:
            payload, signatures = _parse(env)
        except EnvelopeError as exc:
            parsed.append(exc)
            continue
        data = pae(PAYLOAD_TYPE, payload)
        first = batch.count
        for keyid, sig in signatures:
            if isinstance(keyid, str) and keyid in by_id:
                batch.append(ed25519.Check(by_id[keyid], sig, data))
        parsed.append((_statement(payload), range(first, batch.count)))
    results = batch.results()

    def opened() -> list[dict[str, Any] | EnvelopeError]:
        verdicts = results()
        return [item if isinstance(item, EnvelopeError)
                else item[0] if any(verdicts[i] for i in item[1])
                else EnvelopeError("no signature verifies with a trusted key") for item in parsed]
    return opened


def _parse(env: Any) -> tuple[bytes, list[tuple[Any, bytes]]]:
    """The payload of ``env`` and its (keyid, raw signature) pairs."""
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError("not a DSSE envelope of an in-toto Statement")
    try:
        payload = sshsig.strict_b64decode(env["payload"])
        signatures = [(s.get("keyid"), sshsig.strict_b64decode(s["sig"])) for s in env["signatures"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError("malformed DSSE envelope") from exc
    return payload, signatures


def _statement(payload: bytes) -> dict[str, Any] | EnvelopeError:
    try:
        statement = json.loads(payload)
    except ValueError:
        return EnvelopeError("payload is not JSON")
    if not isinstance(statement, dict):
        return EnvelopeError("payload is not a JSON object")
    return statement
