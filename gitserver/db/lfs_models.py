"""The Git LFS tables (docs/lfs.md): which repository holds which object, and file locks. A
module of its own beside gitserver.db.models, which imports it so that every table is on the
one metadata."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gitserver.db.base import Base, created_column


class LfsObject(Base):
    """A Git LFS object a repository holds (gitserver.lfs). The content lives once in the
    object store, by its SHA-256; this row is what lets one repository read it, so knowing a
    digest gives no access to another repository's object. Rows are never deleted."""

    __tablename__ = "lfs_objects"
    __table_args__ = (UniqueConstraint("repo_id", "oid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    oid: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = created_column()


class LfsLock(Base):
    """A Git LFS file lock (git-lfs's locking API): one per path and repository."""

    __tablename__ = "lfs_locks"
    __table_args__ = (UniqueConstraint("repo_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    ref_name: Mapped[str] = mapped_column(String(1024), default="")
    # Who holds it: a user, or (site-admin tokens, OIDC principals) only a name.
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    owner_name: Mapped[str] = mapped_column(String(200))
    locked_at: Mapped[dt.datetime] = created_column()
