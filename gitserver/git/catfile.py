"""Many objects' contents from one ``git cat-file --batch``.

git keeps a cache of delta bases while it reads, so objects stored as long delta chains (the
notes of a reference log are: similar blobs, packed against each other) cost a fraction of
what reading them one by one through libgit2 does (10,000 note blobs: 0.25 s of git's CPU
against 0.7 s).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from gitserver.git.store import GIT, git_env

TIMEOUT_SECONDS = 3600.0
MISSING = b"missing"


class CatFileError(Exception):
    """git could not be asked, or answered what cannot be read."""


def contents(git_dir: Path, oids: Sequence[str]) -> dict[str, bytes]:
    """Each object id → its contents; an object the repository lacks is left out."""
    if not oids:
        return {}
    try:
        result = subprocess.run([GIT, "--git-dir", str(git_dir), "cat-file", "--batch"],
                                input="".join(f"{oid}\n" for oid in oids).encode(), capture_output=True,
                                env=git_env(), timeout=TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CatFileError(f"git cat-file: {exc}") from exc
    if result.returncode != 0:
        raise CatFileError(f"git cat-file: {result.stderr.decode('utf-8', 'replace').strip()[:200]}")
    return _parse(result.stdout, oids)


def _parse(out: bytes, oids: Sequence[str]) -> dict[str, bytes]:
    """``<oid> <type> <size>\\n<contents>\\n`` per object, or ``<oid> missing\\n``."""
    found: dict[str, bytes] = {}
    pos = 0
    for oid in oids:
        end = out.find(b"\n", pos)
        if end < 0:
            raise CatFileError("git cat-file: its answer ended early")
        header = out[pos:end].split(b" ")
        if header[-1] == MISSING:
            pos = end + 1
            continue
        if len(header) != 3 or not header[2].isdigit():
            raise CatFileError(f"git cat-file: unexpected line {out[pos:end][:80]!r}")
        size = int(header[2])
        found[oid] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1  # the LF after each object
    return found
