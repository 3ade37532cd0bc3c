"""The signature state of an archive tag, as the tags page shows it.

One small function on purpose: signed archive tags (docs/contract.md, Verifiable history)
arrive with the provenance work. Until the server has signing keys this says ``unsigned``;
once an allowed-signers file exists in the data dir, it says what ``git verify-tag`` says.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SSH_SIGNATURE = b"-----BEGIN SSH SIGNATURE-----"
VERIFY_TIMEOUT = 10.0


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
