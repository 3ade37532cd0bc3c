"""Repour-style archive objects, written straight into a bare repository with pygit2.

An archive of a tree is an orphan commit whose author, committer, date and message are fixed,
so its id depends on the tree alone: archiving the same tree twice gives the same commit.
It is named by an annotated tag ``repour-<commit id>`` and a branch ``branch-repour-<commit
id>`` (the branch keeps the commit reachable for clients that fetch branches only).

These refs are written by the server and nowhere else: the hooks refuse the reserved names to
every pusher (gitserver.git.refs.RESERVED_PREFIXES), and nothing here goes through
receive-pack, so the protection rules on user pushes are not weakened to let the server write
them. They are created by a :data:`RefCreator` (gitserver.provenance.archive_tags), in one
transaction with their entries in the reference log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pygit2

from gitserver.git.refs import HEADS, RESERVED_BRANCH_PREFIX, RESERVED_TAG_PREFIX, TAGS

# Writes the annotated tag object of an archive, signed (gitserver.provenance.archive_tags):
# (repository, commit id, tag name, tagger time in seconds, message) → the tag object's id.
TagWriter = Callable[[pygit2.Repository, str, str, int, str], str]
# Creates those of the (full ref name, value) pairs that do not exist yet, together with their
# log entries (gitserver.provenance.archive_tags.create_refs); the names it created.
RefCreator = Callable[[list[tuple[str, str]]], list[str]]
# A ref lock is held for the microseconds of one write; one this old was left by a writer that
# died (a worker killed mid-archive), and would block that ref forever.
STALE_LOCK_SECONDS = 10.0


class RefLocked(Exception):
    """A ref's lock file is held: by a live writer, or by one that died a moment ago."""

ARCHIVE_NAME = "gitserver"
ARCHIVE_EMAIL = "gitserver@localhost"
# Constant: any change here would give every tree a new archive commit id.
ARCHIVE_MESSAGE = "Archive of a pushed tree\n"
EPOCH = 0  # 1970-01-01T00:00:00Z


@dataclasses.dataclass(frozen=True)
class ArchiveRefs:
    """What :func:`write_archive` produced (or found already there)."""

    tree_id: str
    commit_id: str
    tag: str  # short name, ``repour-<commit id>``
    branch: str  # short name, ``branch-repour-<commit id>``
    created: bool  # False when the tag existed already


def archive_signature() -> pygit2.Signature:
    return pygit2.Signature(ARCHIVE_NAME, ARCHIVE_EMAIL, EPOCH, 0)


def tag_name(commit_id: str) -> str:
    return f"{RESERVED_TAG_PREFIX}{commit_id}"


def branch_name(commit_id: str) -> str:
    return f"{RESERVED_BRANCH_PREFIX}{commit_id}"


def tag_message(repo_name: str, ref: str, commit_id: str) -> str:
    """The annotated tag's message: where the archived tree came from."""
    return (f"Archive of {repo_name} {ref} at {commit_id}\n\n"
            f"Repository: {repo_name}\nRef: {ref}\nCommit: {commit_id}\n")


# libgit2 answers a tag of a blob with GitError ("the requested type does not match").
_PEEL_ERRORS = (KeyError, ValueError, pygit2.GitError)


def peel_commit(repo: pygit2.Repository, oid: str) -> pygit2.Commit | None:
    """The commit ``oid`` names (following annotated tags), or None for a tree/blob/missing."""
    try:
        found = repo[oid].peel(pygit2.Commit)
    except _PEEL_ERRORS:
        return None
    return found if isinstance(found, pygit2.Commit) else None


def peel_tree(repo: pygit2.Repository, oid: str) -> pygit2.Tree | None:
    """The tree ``oid`` names (a commit's, or a tag's of a commit or a tree), or None when it
    ends at a blob or is missing."""
    try:
        found = repo[oid].peel(pygit2.Tree)
    except _PEEL_ERRORS:
        return None
    return found if isinstance(found, pygit2.Tree) else None


def archive_commit_id(repo: pygit2.Repository, tree_id: str) -> str:
    """Write (or find: same content, same id) the orphan archive commit of ``tree_id``."""
    signature = archive_signature()
    oid = repo.create_commit(None, signature, signature, ARCHIVE_MESSAGE, pygit2.Oid(hex=tree_id), [])
    return str(oid)


def write_archive(repo: pygit2.Repository, tree_id: str, message: str, write_tag: TagWriter,
                  create_refs: RefCreator, now: dt.datetime | None = None) -> ArchiveRefs:
    """Archive ``tree_id``: orphan commit, annotated tag (its object made by ``write_tag``:
    signed, dated now) and branch, the refs made by ``create_refs``; idempotent.

    When the tag exists already (an earlier or concurrent archive of the same tree), it is
    kept as it is (tags never move) and ``created`` is False.
    """
    commit_id = archive_commit_id(repo, tree_id)
    tag, branch = tag_name(commit_id), branch_name(commit_id)
    wanted: list[tuple[str, str]] = []
    if repo.references.get(TAGS + tag) is None:
        when = int((now or dt.datetime.now(dt.UTC)).timestamp())
        wanted.append((TAGS + tag, write_tag(repo, commit_id, tag, when, message)))
    if repo.references.get(HEADS + branch) is None:
        wanted.append((HEADS + branch, commit_id))
    # A tag made by another worker since we looked is kept, and ours is left unnamed.
    created = create_refs(wanted) if wanted else []
    return ArchiveRefs(tree_id=tree_id, commit_id=commit_id, tag=tag, branch=branch, created=TAGS + tag in created)


def read_blob(repo: pygit2.Repository, tree_id: str, path: str, max_size: int) -> bytes | None:
    """The content of ``path`` in ``tree_id``, or None when absent or not a file.

    Raises ValueError when the blob is bigger than ``max_size``.
    """
    tree = repo[tree_id].peel(pygit2.Tree)
    try:
        entry = tree[path]
    except KeyError:
        return None
    # Type and size from the object header first: loading the object inflates all of it, and
    # a pushed pack of a few hundred KiB can hold a blob of gigabytes of zeros.
    try:
        kind, size = repo.odb.read_header(entry.id)
    except KeyError:  # a submodule entry names a commit of another repository
        return None
    if kind != pygit2.enums.ObjectType.BLOB:
        return None
    if size > max_size:
        raise ValueError(f"{path} is {size} bytes, more than the {max_size} allowed")
    obj = repo[entry.id]
    return obj.data if isinstance(obj, pygit2.Blob) else None
