"""LFS pointer files in a repository's history, for ``gitserver check`` and for Repour's sync
(which brings the objects they name from the origin).

A pointer is a small blob (git-lfs's specification: under 1024 bytes) of the form::

    version https://git-lfs.github.com/spec/v1
    oid sha256:<64 hex digits>
    size <bytes>

:func:`pointers_in` lists every pointer reachable from a repository's refs (or from the
revisions given), with one path it appears at, as ``git lfs fsck --pointers`` would find them:
``git rev-list --objects``, then ``git cat-file`` on the small blobs only. A repository "uses
LFS" when it holds LFS objects or the root ``.gitattributes`` of its default branch (or of the
revisions given) names ``filter=lfs``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from gitserver.git.store import GIT, git_env

MAX_POINTER_BYTES = 1024
SPEC_LINE = "version https://git-lfs.github.com/spec/v1"
_POINTER_RE = re.compile(r"version https://git-lfs\.github\.com/spec/v1\n"
                         r"oid sha256:([0-9a-f]{64})\nsize ([0-9]{1,19})\n(?:[a-z0-9.-]+ [^\n]*\n)*")
GIT_TIMEOUT = 3600.0
ALL_REFS = ("--all",)
ATTRIBUTES_FILE = ".gitattributes"
LFS_FILTER = b"filter=lfs"


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


def _git(path: Path, *args: str, stdin: bytes | None = None, timeout: float = GIT_TIMEOUT) -> bytes:
    return subprocess.run([GIT, "--git-dir", str(path), *args], input=stdin, capture_output=True, check=True,
                          env=git_env(), timeout=timeout).stdout


def uses_lfs(path: Path, revs: Sequence[str] = ("HEAD",), timeout: float = GIT_TIMEOUT) -> bool:
    """Whether the root ``.gitattributes`` (where ``git lfs track`` writes) of one of ``revs``
    routes some path through LFS: one ``git cat-file --batch`` for all of them. ``revs`` are
    ref names or object ids."""
    wanted = "".join(f"{rev}:{ATTRIBUTES_FILE}\n" for rev in revs if "\n" not in rev)
    contents = _git(path, "cat-file", "--batch", stdin=wanted.encode(), timeout=timeout)
    pos = 0
    while pos < len(contents):
        header_end = contents.index(b"\n", pos)
        header = contents[pos:header_end].split(b" ")
        if header[-1] == b"missing" or len(header) != 3:
            pos = header_end + 1
            continue
        size = int(header[2])
        body = contents[header_end + 1:header_end + 1 + size]
        if header[1] == b"blob" and LFS_FILTER in body:
            return True
        pos = header_end + 1 + size + 1  # the LF after each object
    return False


def pointers_in(path: Path, revs: Sequence[str] = ALL_REFS, timeout: float = GIT_TIMEOUT) -> Iterator[Pointer]:
    """Every LFS pointer reachable from ``revs`` (by default the repository's refs), one path
    each. ``revs`` are ``--all`` or ref names and object ids, never other options."""
    options = [rev for rev in revs if rev == "--all"]
    names = [rev for rev in revs if rev != "--all"]
    # Blobs too large to be pointers are left out of the listing by git itself.
    listing = _git(path, "rev-list", "--objects", f"--filter=blob:limit={MAX_POINTER_BYTES}", *options,
                   "--end-of-options", *names, timeout=timeout).decode("utf-8", "replace")
    paths: dict[str, str] = {}
    for line in listing.splitlines():
        oid, _, name = line.partition(" ")
        if name:
            paths.setdefault(oid, name)
    if not paths:
        return
    checked = _git(path, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)",
                   stdin="".join(f"{oid}\n" for oid in paths).encode(), timeout=timeout).decode()
    small = [oid for oid, kind, size in (line.split(" ") for line in checked.splitlines())
             if kind == "blob" and int(size) < MAX_POINTER_BYTES]
    if not small:
        return
    contents = _git(path, "cat-file", "--batch", stdin="".join(f"{oid}\n" for oid in small).encode(),
                    timeout=timeout)
    pos = 0
    for oid in small:
        header_end = contents.index(b"\n", pos)
        size = int(contents[pos:header_end].split(b" ")[2])
        body = contents[header_end + 1:header_end + 1 + size]
        pos = header_end + 1 + size + 1  # the LF after each object
        parsed = parse_pointer(body)
        if parsed is not None:
            yield Pointer(parsed[0], parsed[1], paths[oid])
