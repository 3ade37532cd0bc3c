"""Signed archive tags and their log entries: what the server's own ref writers call.

An archive tag (``repour-<commit>``, and Repour's adjust tags) is an annotated tag whose
tagger date is the moment it was made, SSH-signed by the server's current key, so ``git
verify-tag`` with the published allowed-signers file accepts it: git hands ssh-keygen the
tagger date as the time to check the key's window at. Its name still depends on the tree
alone; the tag object, being dated and signed, differs between repositories, but within one
repository it is written once and never replaced (tags never move).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pygit2

from gitserver.git import archive as git_archive
from gitserver.git import refs
from gitserver.provenance import gitsign, reflog
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import Entry


def tag_writer(key: signing.Signer, name: str = git_archive.ARCHIVE_NAME,
               email: str = git_archive.ARCHIVE_EMAIL) -> git_archive.TagWriter:
    """A :data:`gitserver.git.archive.TagWriter` that signs with ``key``."""
    def write(repo: pygit2.Repository, commit_id: str, tag: str, when: int, message: str) -> str:
        tagger = gitsign.Ident(name, email, dt.datetime.fromtimestamp(when, dt.UTC))
        return gitsign.write_signed_tag(repo, key, commit_id, tag, tagger, message)
    return write


def log_server_refs(path: Path, key: signing.Signer, names: list[str]) -> list[reflog.Logged]:
    """Log the server-written refs ``names`` (full names) at their values on disk; those of
    them the log had at those values already are left out."""
    repo = pygit2.Repository(str(path))
    entries = []
    for name in names:
        ref = repo.references.get(name)
        if ref is not None:
            entries.append(Entry(ref=name, old=refs.ZERO_OID, new=str(ref.target)))
    return reflog.append(path, key, entries)
