"""Local origins (a path, or a ``file://`` URL) and the rule they must pass: git reads nothing
inside the server's data directory for them, however the path is spelt.

The check works on what git itself would open, not on the text the caller sent:

* git URL-decodes a ``file://`` URL (``%64ata`` is ``data``, ``%2F`` a ``/``, ``%2e%2e`` a
  ``..``), and ignores its host part. A ``%`` in a ``file://`` URL is refused outright: there is
  no reason to spell a local path that way, and refusing it leaves no decoding to get wrong.
* the path is resolved (``..``, ``.``, doubled slashes, symbolic links anywhere on it), and git
  is handed the resolved path, so it opens exactly what was checked;
* git's ``enter_repo`` tries ``<path>/.git``, ``<path>``, ``<path>.git/.git`` and
  ``<path>.git``; each that exists is resolved and checked;
* a repository can send git elsewhere: a ``.git`` file (``gitdir: …``), ``commondir``, an
  ``objects`` link and ``objects/info/alternates`` (and alternates of those, as deep as git
  goes). Each is followed and checked; what cannot be checked (a quoted alternate, a pointer
  file too large to read) is refused.

Inside means the resolved path is the data directory or below it, by name (with a trailing
separator) and by identity (device and inode of every ancestor), so a bind mount or another
name of the data directory is caught too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# The order git's enter_repo() tries suffixes of a local path in (path.c).
GIT_REPO_SUFFIXES = ("/.git", "", ".git/.git", ".git")
FILE_URL_PREFIX = "file://"
GITDIR_PREFIX = "gitdir:"
COMMONDIR = "commondir"
ALTERNATES = "info/alternates"  # in an objects directory
# A repository's pointers are small text files; anything larger is not one.
MAX_POINTER_BYTES = 64 * 1024
# git follows alternates of alternates up to this depth (object-file.c); gitdir and commondir
# chain at most a step or two in a real repository.
MAX_ALTERNATE_DEPTH = 6
MAX_POINTER_DEPTH = 3


class LocalOriginRefused(ValueError):
    """A local origin git must not read; the message says why."""


def local_path(text: str) -> str:
    """The path git opens for a local origin (``/path`` or ``file://[localhost]/path``),
    without resolving it; LocalOriginRefused for a ``%`` in a ``file://`` URL."""
    if not text.lower().startswith(FILE_URL_PREFIX):
        return text
    if "%" in text:
        raise LocalOriginRefused("a file:// origin cannot contain '%' (git would decode it); "
                                 "spell the path out")
    rest = text[len(FILE_URL_PREFIX):]
    return rest[rest.index("/"):] if "/" in rest else ""


def checked_path(text: str, data_dir: Path) -> str:
    """The resolved path to hand git for the local origin ``text``; LocalOriginRefused when
    git would read anything inside ``data_dir`` for it."""
    path = local_path(text)
    if not path.startswith("/"):
        raise LocalOriginRefused("a local origin must be an absolute path")
    # Leading doubled slashes survive realpath ("//srv" is "//srv" on POSIX): fold them first.
    resolved = os.path.realpath("/" + path.lstrip("/"))
    data = Path(os.path.realpath(data_dir))
    for target in _paths_git_reads(resolved):
        if _inside(target, data):
            raise LocalOriginRefused("local paths inside the server's data directory cannot be "
                                     "origins (they hold every tenant's repositories)")
    return resolved


def _paths_git_reads(resolved: str) -> Iterator[Path]:
    """Every resolved path git may open as the repository at ``resolved``, and where that
    repository's pointers lead."""
    yield Path(resolved)
    for suffix in GIT_REPO_SUFFIXES:
        candidate = resolved + suffix
        if not os.path.lexists(candidate):
            continue
        repo = Path(os.path.realpath(candidate))
        yield repo
        yield from _pointers(repo)


def _pointers(repo: Path, depth: int = 0) -> Iterator[Path]:
    if depth > MAX_POINTER_DEPTH:
        raise LocalOriginRefused("the origin repository's pointers (gitdir, commondir) nest too deep")
    if repo.is_file():
        # A .git file: "gitdir: <path>", relative to the file's directory.
        text = _small_text(repo)
        if text.startswith(GITDIR_PREFIX):
            target = _follow(repo.parent, text[len(GITDIR_PREFIX):].strip())
            yield target
            if target.is_dir():
                yield from _pointers(target, depth + 1)
        return
    if not repo.is_dir():
        return
    objects = Path(os.path.realpath(repo / "objects"))
    yield objects
    yield from _alternates(objects, 0)
    if (repo / COMMONDIR).is_file():
        common = _follow(repo, _small_text(repo / COMMONDIR).strip())
        yield common
        yield from _pointers(common, depth + 1)


def _alternates(objects: Path, depth: int) -> Iterator[Path]:
    """The object directories ``objects/info/alternates`` adds, as deep as git follows them."""
    if depth > MAX_ALTERNATE_DEPTH or not (objects / ALTERNATES).is_file():
        return
    for line in _small_text(objects / ALTERNATES).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith('"'):
            # git reads a C-quoted path here; rather than decode it, refuse it.
            raise LocalOriginRefused("the origin repository's alternates cannot be checked (a quoted path)")
        # Relative alternates are relative to the objects directory.
        target = _follow(objects, line.strip())
        yield target
        yield from _alternates(target, depth + 1)


def _follow(base: Path, pointer: str) -> Path:
    return Path(os.path.realpath(base / pointer))


def _small_text(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_POINTER_BYTES + 1)
    except OSError:
        return ""
    if len(data) > MAX_POINTER_BYTES:
        raise LocalOriginRefused(f"the origin repository's {path.name} file is too large to check")
    return data.decode("utf-8", errors="replace")


def _inside(path: Path, data: Path) -> bool:
    if path == data or str(path).startswith(str(data).rstrip(os.sep) + os.sep):
        return True
    try:
        data_stat = os.stat(data)
    except OSError:
        return False
    for ancestor in (path, *path.parents):
        try:
            if os.path.samestat(os.stat(ancestor), data_stat):
                return True
        except OSError:
            continue
    return False
