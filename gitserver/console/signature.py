"""The signature state of an archive tag, as the tags page shows it.

Archive tags are signed with the server's signing key (docs/provenance.md); this says what
``git verify-tag`` says of a tag against the published keys (gitserver.provenance.keys: the
same allowed-signers file as ``GET /api/v1/signing-keys/allowed_signers``), or ``unsigned``
for a tag made before signing existed.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from gitserver.provenance import keys

SSH_SIGNATURE = b"-----BEGIN SSH SIGNATURE-----"
VERIFY_TIMEOUT = 10.0


def allowed_signers(signing_dir: Path) -> str:
    """The allowed-signers text of the server's signing keys ("" when it has none)."""
    try:
        return keys.allowed_signers(keys.read_history(signing_dir))
    except keys.SigningKeyError:
        return ""


def tag_signatures(repo_path: Path, tags: dict[str, bytes], signers: str) -> dict[str, str]:
    """:func:`tag_signature` of each tag (name → raw tag object), against ``signers``."""
    with tempfile.TemporaryDirectory(prefix="gitserver-signers-") as tmp:
        path = Path(tmp) / "allowed_signers"
        if signers:
            path.write_text(signers)
        return {tag: tag_signature(repo_path, tag, raw, path) for tag, raw in tags.items()}


def tag_signature(repo_path: Path, tag: str, tag_object: bytes, allowed_signers: Path) -> str:
    """``unsigned``, ``signed`` (no keys to check against here), ``verified`` or
    ``bad signature`` for the annotated tag ``tag`` (its raw object ``tag_object``)."""
    if SSH_SIGNATURE not in tag_object:
        return "unsigned"
    if not allowed_signers.is_file():
        return "signed"
    argv = ["git", "-C", str(repo_path), "-c", "gpg.format=ssh",
            "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "verify-tag", "--", tag]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=VERIFY_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return "not checked (timeout)"
    return "verified" if done.returncode == 0 else "bad signature"
