"""LFS pointer files in a repository's history, for ``gitserver check``.

A pointer is a small blob (git-lfs's specification: under 1024 bytes) of the form::

    version https://git-lfs.github.com/spec/v1
    oid sha256:<64 hex digits>
    size <bytes>

:func:`pointers_in` lists every pointer reachable from a repository's refs, with one path it
appears at, as ``git lfs fsck --pointers`` would find them: ``git rev-list --objects --all``,
then ``git cat-file`` on the small blobs only. A repository "uses LFS" when it holds LFS objects
or its default branch's ``.gitattributes`` names ``filter=lfs``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from gitserver.git.store import GIT, git_env

MAX_POINTER_BYTES = 1024
SPEC_LINE = "version https://git-lfs.github.com/spec/v1"
_POINTER_RE = re.compile(r"version https://git-lfs\.github\.com/spec/v1\n"
                         r"oid sha256:([0-9a-f]{64})\nsize ([0-9]{1,19})\n(?:[a-z0-9.-]+ [^\n]*\n)*")
GIT_TIMEOUT = 3600.0


class Pointer(NamedTuple):
    oid: str
    size: int
    path: str


def parse_pointer(text: bytes) -> tuple[str, int] | None:
    """(oid, size) of a pointer file's content, None for anything else."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _POINTER_RE.fullmatch(decoded)
    return (match.group(1), int(match.group(2))) if match else None


def _git(path: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run([GIT, "--git-dir", str(path), *args], input=stdin, capture_output=True, check=True,
                          env=git_env(), timeout=GIT_TIMEOUT).stdout


def uses_lfs(path: Path) -> bool:
    """Whether the default branch's ``.gitattributes`` routes some path through LFS."""
    try:
        text = _git(path, "cat-file", "blob", "HEAD:.gitattributes")
    except subprocess.CalledProcessError:
        return False
    return b"filter=lfs" in text


def pointers_in(path: Path) -> Iterator[Pointer]:
    """Every LFS pointer reachable from the repository's refs (one path each)."""
    listing = _git(path, "rev-list", "--objects", "--all").decode("utf-8", "replace")
    paths: dict[str, str] = {}
    for line in listing.splitlines():
        oid, _, name = line.partition(" ")
        if name:
            paths.setdefault(oid, name)
    if not paths:
        return
    checked = _git(path, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)",
                   stdin="".join(f"{oid}\n" for oid in paths).encode()).decode()
    small = [oid for oid, kind, size in (line.split(" ") for line in checked.splitlines())
             if kind == "blob" and int(size) < MAX_POINTER_BYTES]
    if not small:
        return
    contents = _git(path, "cat-file", "--batch", stdin="".join(f"{oid}\n" for oid in small).encode())
    pos = 0
    for oid in small:
        header_end = contents.index(b"\n", pos)
        size = int(contents[pos:header_end].split(b" ")[2])
        body = contents[header_end + 1:header_end + 1 + size]
        pos = header_end + 1 + size + 1  # the LF after each object
        parsed = parse_pointer(body)
        if parsed is not None:
            yield Pointer(parsed[0], parsed[1], paths[oid])
