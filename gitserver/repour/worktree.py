"""The alignment tool's work tree as plain files: written out from the checked-out commit
(:func:`write_work_tree`) and read back into a tree of the server's own repository
(:func:`tree_from_work_tree`); docs/sandbox.md, "What the server reads back".

The tool wrote everything under the work tree except ``.git``, so nothing there may steer the
server: git is never run in the tree (``git add`` would run filter drivers named by a
``.gitattributes`` and enter nested repositories, reading their job-written config). Instead
each file's bytes become a blob as they are:

* no attributes, filters or end-of-line conversion, either way;
* a symbolic link is stored as a symbolic link (its target's text), never followed;
* a path that is a symbolic link in the checked-out commit was checked out as a text file
  (``core.symlinks=false``) and stays a link whose target is that file's text, as git would;
* a gitlink of the checked-out commit stays exactly the pushed gitlink, whatever the tool put
  at that path (a submodule pointer is the pusher's, not the tool's);
* a ``.git`` entry at any depth is never committed: a nested repository is data, and only its
  other files are;
* FIFOs, sockets and devices are skipped (reading one could block the server);
* a path the checked-out commit does not have is left out when ``.gitignore`` ignores it (as
  ``git add --all`` did, so build output stays out of the tag); a ``.gitignore`` that is not a
  regular file is committed as what it is but never read as patterns (libgit2 would follow a
  link to a server file, and which files get committed would tell its lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pygit2

from gitserver.repour.command import ProcessingError

log = logging.getLogger(__name__)

MODE_TREE = 0o040000
MODE_BLOB = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_LINK = 0o120000
MODE_GITLINK = 0o160000
DOT_GIT = b".git"
GITIGNORE = b".gitignore"
# Deeper trees are refused rather than walked (the walk recurses once per level).
MAX_TREE_DEPTH = 256
READ_CHUNK = 1 << 20

Entry = tuple[int, pygit2.Oid]
T = TypeVar("T", bound=pygit2.Object)


@contextlib.contextmanager
def kept_in_place(work_dir: Path) -> Iterator[None]:
    """Refuse, after the block, a work tree or ``.git`` that is no longer the directory it was.
    The tool owns the work tree's parent and may rename ``work`` (a directory holding a mount
    point can move) and put a link or a directory of its own, with a ``.git`` it wrote, in its
    place; the server would then read a repository and files the tool chose."""
    before = [_identity(work_dir), _identity(work_dir / ".git")]
    yield
    if [_identity(work_dir), _identity(work_dir / ".git")] != before:
        raise ProcessingError("the alignment tool moved or replaced the work tree or its .git: nothing "
                              "was committed", exit_code=1, error_type="AdjustCommandError")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory that is no symbolic link; None otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def write_work_tree(repo: pygit2.Repository, tree: pygit2.Tree, work_dir: Path) -> None:
    """Write ``tree`` into the empty ``work_dir`` as plain files, the mirror of what
    :func:`tree_from_work_tree` reads: bytes as they are (no attributes, so an unchanged file
    reads back as the same blob), a symbolic link as a small text file holding its target (an
    alignment tool rewriting "pom.xml" can never write through it to a server file), a gitlink
    as an empty directory."""
    _write_directory(repo, tree, os.fsencode(work_dir), 0)


def _write_directory(repo: pygit2.Repository, tree: pygit2.Tree, path: bytes, depth: int) -> None:
    if depth > MAX_TREE_DEPTH:
        raise ProcessingError(f"the tree is deeper than {MAX_TREE_DEPTH} levels: not checked out",
                              error_type="AdjustCommandError")
    for entry in tree:
        name = entry.raw_name or b""
        if name in (b"", b".", b"..") or b"/" in name or b"\0" in name or name.lower() == DOT_GIT:
            raise ProcessingError(f"the tree holds an entry git cannot check out: {name!r}",
                                  error_type="AdjustCommandError")
        target = path + b"/" + name
        if entry.filemode in (MODE_TREE, MODE_GITLINK):
            os.mkdir(target, 0o755)
            if entry.filemode == MODE_TREE:
                _write_directory(repo, _object(repo, entry.id, pygit2.Tree), target, depth + 1)
            continue
        mode = 0o755 if entry.filemode == MODE_EXECUTABLE else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_object(repo, entry.id, pygit2.Blob).data)


def _object(repo: pygit2.Repository, oid: pygit2.Oid, kind: type[T]) -> T:
    obj = repo[oid]
    if not isinstance(obj, kind):
        raise ProcessingError(f"object {oid} is not a {kind.__name__.lower()}", error_type="AdjustCommandError")
    return obj


def tree_from_work_tree(repo: pygit2.Repository, work_dir: Path, base: pygit2.Tree,
                        max_blob_bytes: int) -> pygit2.Oid:
    """The id of the tree that holds ``work_dir`` as plain files (see the module's rules),
    written into ``repo`` (the server's own ``.git``); ``base`` is the checked-out commit's."""
    reader = _Reader(repo, max_blob_bytes)
    try:
        oid = reader.directory(os.fsencode(work_dir), base, b"", 0)
    except OSError as exc:  # a path too long to open, say
        where = os.fsdecode(exc.filename or b"").removeprefix(f"{work_dir}/")
        raise ProcessingError(f"the alignment tool's work tree could not be read: {exc.strerror}: "
                              f"{where[-200:]}", exit_code=1, error_type="AdjustCommandError") from exc
    return oid if oid is not None else repo.odb.write(pygit2.enums.ObjectType.TREE, b"")


class _Reader:
    def __init__(self, repo: pygit2.Repository, max_blob_bytes: int) -> None:
        self.repo = repo
        self.max_blob_bytes = max_blob_bytes

    def directory(self, path: bytes, base: pygit2.Tree | None, rel: bytes, depth: int) -> pygit2.Oid | None:
        """The tree of one directory, or None when it holds nothing to commit."""
        if depth > MAX_TREE_DEPTH:
            raise ProcessingError(f"the alignment tool left a directory tree deeper than {MAX_TREE_DEPTH} "
                                  f"levels ({os.fsdecode(rel)[:200]}…): not committed",
                                  exit_code=1, error_type="AdjustCommandError")
        names = sorted(os.listdir(path))
        known = {entry.raw_name or b"": entry for entry in base} if base is not None else {}
        entries: dict[bytes, Entry] = {}
        if GITIGNORE in names:
            entry = self._untrusted_gitignore(path + b"/" + GITIGNORE, rel + GITIGNORE)
            if entry is not None:
                entries[GITIGNORE] = entry
                names.remove(GITIGNORE)
        for name in names:
            if name.lower() == DOT_GIT:
                continue
            entry = self.entry(path + b"/" + name, known.get(name), rel + name, depth)
            if entry is not None:
                entries[name] = entry
        if not entries:
            return None
        return self.repo.odb.write(pygit2.enums.ObjectType.TREE, _tree_bytes(entries))

    def entry(self, path: bytes, base: pygit2.Object | None, rel: bytes, depth: int) -> Entry | None:
        base_mode = base.filemode if base is not None else None
        if base is not None and base_mode == MODE_GITLINK:
            return MODE_GITLINK, base.id
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return MODE_LINK, self.repo.create_blob(os.readlink(path))
        if base is None and self._ignored(rel, is_dir=stat.S_ISDIR(st.st_mode)):
            return None
        if stat.S_ISDIR(st.st_mode):
            subtree = base if isinstance(base, pygit2.Tree) else None
            oid = self.directory(path, subtree, rel + b"/", depth + 1)
            return (MODE_TREE, oid) if oid is not None else None
        if not stat.S_ISREG(st.st_mode):
            return None  # a FIFO, socket or device: no content to commit
        blob = self._blob(self._read(path, rel), base)
        if base_mode == MODE_LINK:
            return MODE_LINK, blob  # checked out as a text file (core.symlinks=false)
        return (MODE_EXECUTABLE if st.st_mode & stat.S_IXUSR else MODE_BLOB), blob

    def _blob(self, data: bytes, base: pygit2.Object | None) -> pygit2.Oid:
        """The blob of ``data``; written only when it is not the checked-out one (libgit2's
        write costs a quarter of a millisecond even for an object it has)."""
        oid = pygit2.hash(data)
        return oid if base is not None and base.id == oid else self.repo.create_blob(data)

    def _untrusted_gitignore(self, path: bytes, rel: bytes) -> Entry | None:
        """A ``.gitignore`` that is not a regular file: its entry, after removing it from the
        tree so libgit2 never reads it as patterns (the tree is the server's, and is deleted
        next). None for a regular one, which is read as usual."""
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            self._check_size(st.st_size, rel)  # libgit2 reads it whole
            return None
        entry = (MODE_LINK, self.repo.create_blob(os.readlink(path))) if stat.S_ISLNK(st.st_mode) else None
        if stat.S_ISDIR(st.st_mode):
            raise ProcessingError("the alignment tool made a directory named .gitignore: not committed",
                                  exit_code=1, error_type="AdjustCommandError")
        log.info("the alignment tool left a .gitignore that is no regular file (%s): not read as patterns",
                 os.fsdecode(rel))
        os.unlink(path)
        return entry

    def _check_size(self, size: int, rel: bytes) -> None:
        if self.max_blob_bytes and size > self.max_blob_bytes:
            raise ProcessingError(f"the alignment tool left {os.fsdecode(rel)[-200:]} of {size} bytes, "
                                  f"over max_blob_bytes ({self.max_blob_bytes}): not committed",
                                  exit_code=1, error_type="AdjustCommandError")

    def _ignored(self, rel: bytes, is_dir: bool) -> bool:
        try:
            name = rel.decode("utf-8") + ("/" if is_dir else "")
        except UnicodeDecodeError:
            return False  # libgit2 takes text paths; such a name is committed
        return bool(self.repo.path_is_ignored(name))

    def _read(self, path: bytes, rel: bytes) -> bytes:
        """A regular file's bytes, opened without following a link (the tree's own, and no job
        process is left to swap one in, but the server never relies on that)."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.closing(os.fdopen(fd, "rb", buffering=0)) as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return b""
            self._check_size(st.st_size, rel)
            chunks = []
            while chunk := fh.read(READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)


def _tree_bytes(entries: dict[bytes, Entry]) -> bytes:
    """A git tree object's content, in git's order (a tree sorts as if its name ended in "/")."""
    def key(name: bytes) -> bytes:
        return name + b"/" if entries[name][0] == MODE_TREE else name

    return b"".join(b"%o %s\0" % (entries[name][0], name) + entries[name][1].raw
                    for name in sorted(entries, key=key))
