"""Git LFS objects in a backup (docs/backup.md): copied in, whichever store keeps them.

Every object some repository of the database snapshot holds is a member ``lfs/<oid>``, read
from the store the server is configured with: the local directory or the S3 bucket alike. A
backup that only listed the bucket's objects would be restorable only while the bucket lives
and keeps them; copied, the file alone restores the server. Each object is checked on the way
in (its SHA-256 must be its name, its size the recorded one), so a damaged or missing object
fails the backup instead of producing one that cannot be restored.

Restore puts the objects into the store the restoring server is configured with: under the new
data dir by default (staged with the rest), or straight into another directory or a bucket,
each written whole or not at all (gitserver.lfs.store). Those are not removed again if the
restore fails later: objects are content-addressed and never deleted, nothing refers to them
without the database, and a second restore finds them in place (an S3 object already there is
not uploaded again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.db import models
from gitserver.lfs import s3, store
from gitserver.lfs.service import open_store
from gitserver.policy.errors import BackupError

log = logging.getLogger(__name__)

MEMBER_PREFIX = "lfs"
# (member name, stream, size) → the SHA-256 of what was written.
AddStream = Callable[[str, BinaryIO, int], str]
Progress = Callable[[str], None]


def recorded_objects(session: Session) -> list[tuple[str, int]]:
    """Every LFS object some repository of the snapshot holds, once each, with its size."""
    rows = session.execute(select(models.LfsObject.oid, func.max(models.LfsObject.size))
                           .group_by(models.LfsObject.oid).order_by(models.LfsObject.oid))
    return [(oid, int(size)) for oid, size in rows]


def add_objects(config: Config, add: AddStream, objects: Sequence[tuple[str, int]], progress: Progress) -> None:
    """Each object from the configured store into the backup, checked. Objects are never
    rewritten or deleted, so a recorded object is the same content now as at the snapshot."""
    if not objects:
        return
    source = open_store(config)
    for number, (oid, size) in enumerate(objects, start=1):
        if number % 100 == 1:
            progress(f"LFS object {number}/{len(objects)}")
        try:
            stream = source.open(oid)
        except FileNotFoundError:
            raise BackupError(f"LFS object {oid} is recorded but missing from {describe(config)} "
                              "(run `gitserver check`)") from None
        try:
            digest = add(f"{MEMBER_PREFIX}/{oid}", stream, size)
        except OSError as exc:  # tarfile: the store's object is shorter than recorded
            raise BackupError(f"LFS object {oid} in {describe(config)} is not the recorded {size} bytes "
                              f"({exc}); run `gitserver check`") from exc
        finally:
            stream.close()
        if digest != oid:
            raise BackupError(f"LFS object {oid} in {describe(config)} is damaged: its content's SHA-256 "
                              f"is {digest}; run `gitserver check`")


def restore_objects(config: Config, staged_data_dir: Path, objects: Sequence[Path]) -> None:
    """The backup's objects (files named by their SHA-256, already checked) into the store
    ``config`` names; ``<data>/lfs`` is the staged data dir's."""
    if not objects:
        return
    target = _restore_store(config, staged_data_dir)
    for path in objects:
        size = path.stat().st_size
        incoming = target.receive(path.name, size)
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(store.CHUNK):
                    incoming.write(chunk)
            target.finish(incoming)  # checked once more, then renamed or uploaded
        finally:
            incoming.discard()
    log.info("restored %d LFS object(s) into %s", len(objects), describe(config))


def _restore_store(config: Config, staged_data_dir: Path) -> store.ObjectStore:
    where = config.lfs_store.strip()
    staged_lfs = staged_data_dir / config.lfs_dir.relative_to(config.data_dir)
    if where.startswith(store.S3_SCHEME):
        # Uploads pass through a local file first: the staged data dir's, since the data dir
        # itself is not in place yet.
        return s3.S3Store.from_config(config, where, tmp_dir=staged_lfs / "tmp")
    if not where or Path(where).resolve() == config.lfs_dir.resolve():
        return store.LocalStore(staged_lfs)
    return store.LocalStore(Path(where))


def describe(config: Config) -> str:
    where = config.lfs_store.strip()
    return where if where.startswith(store.S3_SCHEME) else str(Path(where) if where else config.lfs_dir)
