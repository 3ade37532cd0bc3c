"""Reading a repository for the pages, with pygit2 and with bounds: a page costs about the
same on a repository of 20,000 commits as on one of 20.

Revisions come from URLs, so they are an allow-list: a branch name, a tag name or a full or
abbreviated commit id. Never ``git rev-parse``'s full language (``:/text`` searches every
commit message; ``@{…}`` reads reflogs).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pygit2

from gitserver.git import refs
from gitserver.policy.errors import NotFound

HEADS = "refs/heads/"
TAGS = "refs/tags/"
ARCHIVE_TAG_PREFIX = TAGS + "repour-"
PAGE_COMMITS = 50
MAX_TREE_ENTRIES = 2000
MAX_DIFF_FILES = 300
MAX_DIFF_BYTES = 512 * 1024
MAX_REFS_SHOWN = 500
_HEX = re.compile(r"^[0-9a-f]{4,64}$")


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str  # without refs/heads/ or refs/tags/
    full: str
    commit: str
    summary: str
    annotated: bool


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    path: str
    kind: str  # "tree", "blob", "commit" (a submodule)
    size: int | None


@dataclasses.dataclass(frozen=True)
class FileDiff:
    old_path: str
    new_path: str
    status: str
    text: str
    binary: bool


@dataclasses.dataclass(frozen=True)
class Diff:
    files: list[FileDiff]
    truncated: bool
    total_files: int


def open_repo(path: Path) -> pygit2.Repository:
    return pygit2.Repository(str(path))


def summary(message: str) -> str:
    return message.split("\n", 1)[0]


def _peel_commit(obj: pygit2.Object | None) -> pygit2.Commit | None:
    try:
        peeled = obj.peel(pygit2.Commit) if obj is not None else None
    except (pygit2.InvalidSpecError, ValueError, KeyError):
        return None
    return peeled if isinstance(peeled, pygit2.Commit) else None


def _refs(repo: pygit2.Repository, prefix: str) -> list[Ref]:
    found: list[Ref] = []
    for full in sorted(repo.references):
        if len(found) >= MAX_REFS_SHOWN:
            break
        if not full.startswith(prefix):
            continue
        obj = repo.get(repo.references[full].target)
        commit = _peel_commit(obj)
        if commit is None:
            continue
        found.append(Ref(full[len(prefix):], full, str(commit.id), summary(commit.message),
                         isinstance(obj, pygit2.Tag)))
    return found


def branches(repo: pygit2.Repository) -> list[Ref]:
    return [r for r in _refs(repo, HEADS) if not refs.is_reserved(r.full)]


def tags(repo: pygit2.Repository) -> list[Ref]:
    """Every tag; the server's archive tags (``repour-*``) among them."""
    return _refs(repo, TAGS)


def default_rev(repo: pygit2.Repository) -> str | None:
    """The branch HEAD names, when it exists."""
    try:
        target = repo.references["HEAD"].target
    except KeyError:
        return None
    name = str(target)
    if name.startswith(HEADS) and name in repo.references:
        return name[len(HEADS):]
    first = branches(repo)
    return first[0].name if first else None


def resolve(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    """The commit ``rev`` names: a branch, a tag, or a commit id (abbreviated from 4 digits)."""
    for full in (HEADS + rev, TAGS + rev):
        if refs.ref_format_problem(full) is None and full in repo.references:
            commit = _peel_commit(repo.get(repo.references[full].target))
            if commit is not None:
                return commit
    if _HEX.match(rev):
        try:
            commit = _peel_commit(repo.revparse_single(rev))
        except (KeyError, ValueError, pygit2.GitError):
            commit = None
        if commit is not None:
            return commit
    raise NotFound(f"no branch, tag or commit {rev[:100]!r} in this repository")


def _clean_path(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    # libgit2 reads a path as a C string: "x.svg\0.txt" would find x.svg under another name.
    if "\0" in path or any(p in (".", "..") for p in parts):
        raise NotFound(f"no path {path[:200]!r}")
    return "/".join(parts)


def lookup(commit: pygit2.Commit, path: str) -> pygit2.Object:
    """The tree or blob at ``path`` in ``commit``'s tree (``""``: the root)."""
    path = _clean_path(path)
    if not path:
        return commit.tree
    try:
        return commit.tree[path]
    except KeyError:
        raise NotFound(f"no file or directory {path[:200]!r} at {str(commit.id)[:12]}") from None


def entries(tree: pygit2.Tree, base: str) -> tuple[list[Entry], bool]:
    """A tree's entries, directories first (at most :data:`MAX_TREE_ENTRIES`; True if cut)."""
    rows = []
    for obj in tree:
        kind = obj.type_str if obj.filemode != pygit2.enums.FileMode.COMMIT else "commit"
        size = obj.size if isinstance(obj, pygit2.Blob) else None
        rows.append(Entry(obj.name or "", f"{base}/{obj.name}".lstrip("/"), kind, size))
    rows.sort(key=lambda e: (e.kind != "tree", e.name))
    return rows[:MAX_TREE_ENTRIES], len(rows) > MAX_TREE_ENTRIES


def log(repo: pygit2.Repository, start: pygit2.Commit,
        limit: int = PAGE_COMMITS) -> tuple[list[pygit2.Commit], str | None]:
    """``limit`` commits from ``start``, newest first, and the id the next page starts from.

    libgit2's default order (committer time through a queue, as ``git log``), not
    ``SortMode.TIME``: that one walks the whole history before the first commit (0.8 s on
    pytest's 17,666 commits, against 1 ms for a page)."""
    walker = repo.walk(start.id, pygit2.enums.SortMode.NONE)
    page: list[pygit2.Commit] = []
    for commit in walker:
        if len(page) == limit:
            return page, str(commit.id)
        page.append(commit)
    return page, None


def diff(repo: pygit2.Repository, commit: pygit2.Commit) -> Diff:
    """The commit against its first parent (a root commit against nothing), cut after
    :data:`MAX_DIFF_FILES` files or :data:`MAX_DIFF_BYTES` of patch text."""
    parent = commit.parents[0] if commit.parents else None
    changes = repo.diff(parent, commit) if parent is not None else commit.tree.diff_to_tree(swap=True)
    files: list[FileDiff] = []
    used = 0
    total = len(changes)
    for patch in _patches(changes):
        delta = patch.delta
        text = "" if delta.is_binary else (patch.text or "")
        if len(files) >= MAX_DIFF_FILES or used + len(text) > MAX_DIFF_BYTES:
            return Diff(files, True, total)
        used += len(text)
        files.append(FileDiff(delta.old_file.path, delta.new_file.path, delta.status_char(), text,
                              bool(delta.is_binary)))
    return Diff(files, False, total)


def _patches(changes: pygit2.Diff) -> Iterator[pygit2.Patch]:
    for patch in changes:
        if patch is not None:
            yield patch


def decode_text(data: bytes) -> str | None:
    """The blob as text when it is UTF-8 without NUL bytes (what git calls text), else None."""
    if b"\0" in data[:8000]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
