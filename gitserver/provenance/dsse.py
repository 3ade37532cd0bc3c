"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1) holding in-toto Statements,
signed with the server's key: a raw ed25519 signature over the pre-authentication encoding,
``keyid`` the key's SHA256 fingerprint, payload and signatures in standard base64 (pure, but
for the signer it is handed)."""

from __future__ import annotations

import base64
import json
from typing import Any

from gitserver.provenance import signer as signing
from gitserver.provenance import sshsig

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
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError("not a DSSE envelope of an in-toto Statement")
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        signatures = [(s.get("keyid"), base64.b64decode(s["sig"], validate=True)) for s in env["signatures"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EnvelopeError("malformed DSSE envelope") from exc
    data = pae(PAYLOAD_TYPE, payload)
    by_id = {sshsig.fingerprint(b): b for b in blobs}
    for keyid, sig in signatures:
        blob = by_id.get(keyid)
        if blob is None:
            continue
        try:
            sshsig.verify_raw(blob, sig, data)
        except sshsig.SignatureError:
            continue
        try:
            statement = json.loads(payload)
        except ValueError as exc:
            raise EnvelopeError("payload is not JSON") from exc
        if not isinstance(statement, dict):
            raise EnvelopeError("payload is not a JSON object")
        return statement
    raise EnvelopeError("no signature verifies with a trusted key")
