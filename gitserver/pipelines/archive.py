"""The archive step: one pushed commit's tree → its immutable tag, deduplicated by tree.

Repour's guarantee: the same tree in the same repository always gets the tag it got the first
time. The Archive table's unique (repo_id, tree_id) makes that an O(1) lookup and settles races
between workers archiving the same tree at once: the loser of the insert reads the winner's row.
A tree seen before creates nothing at all, neither objects nor refs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pygit2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import archive as git_archive
from gitserver.observe import metrics
from gitserver.provenance import archive_tags
from gitserver.provenance.signer import Signer

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ArchiveResult:
    """The archive of one pushed ref."""

    ref: str
    source_commit: str
    tree_id: str
    tag: str
    commit_id: str
    created: bool

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def find_archive(session: Session, repo_id: int, tree_id: str) -> models.Archive | None:
    return session.scalar(select(models.Archive).where(models.Archive.repo_id == repo_id,
                                                       models.Archive.tree_id == tree_id))


def archive_ref(sessions: sessionmaker[Session], repo_path: Path, repo: models.Repository,
                ref: str, new: str, pipeline_id: int | None, key: Signer) -> ArchiveResult | None:
    """Archive the tree that ``new`` (the value ``ref`` was updated to) peels to: a commit's,
    or the tree a tag names. None when it peels to no tree (a tag of a blob). The tag is
    signed with ``key``, and the tag and branch are created in one transaction with their
    entries in ``refs/gitserver/log``: RefsNotWritten (nothing made) when the log cannot be."""
    git = pygit2.Repository(str(repo_path))
    commit = git_archive.peel_commit(git, new)
    if commit is not None:
        tree_id, source = str(commit.tree_id), str(commit.id)
    else:
        tree = git_archive.peel_tree(git, new)
        if tree is None:
            return None
        tree_id, source = str(tree.id), ""  # a tag of a tree: there is no commit to name
    with transaction(sessions) as session:
        existing = find_archive(session, repo.id, tree_id)
        if existing is not None:
            metrics.archive(created=False)
            return _result(ref, source, existing, created=False)
    message = git_archive.tag_message(repo.full_name, ref, source or new)
    # The refs and their log entries before the row: a crash between the two leaves a logged
    # tag the next run finds.
    refs = git_archive.write_archive(git, tree_id, message, archive_tags.tag_writer(key),
                                     archive_tags.ref_creator(repo_path, key))
    row = models.Archive(repo_id=repo.id, tree_id=tree_id, tag=refs.tag, commit_id=refs.commit_id,
                         source_commit=source, source_ref=ref, pipeline_id=pipeline_id)
    try:
        with transaction(sessions) as session:
            session.add(row)
    except IntegrityError:
        # Another worker archived the same tree between our lookup and our insert. Its row
        # names the same tag (same tree → same archive commit), and it stands.
        with transaction(sessions) as session:
            winner = find_archive(session, repo.id, tree_id)
            if winner is None:
                raise
            metrics.archive(created=False)
            return _result(ref, source, winner, created=False)
    metrics.archive(created=True)
    log.info("archived %s %s (%s) as %s", repo.full_name, ref, source, refs.tag)
    return ArchiveResult(ref=ref, source_commit=source, tree_id=tree_id, tag=refs.tag,
                         commit_id=refs.commit_id, created=True)


def _result(ref: str, source: str, row: models.Archive, created: bool) -> ArchiveResult:
    return ArchiveResult(ref=ref, source_commit=source, tree_id=row.tree_id, tag=row.tag,
                         commit_id=row.commit_id, created=created)
