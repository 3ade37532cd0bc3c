"""The tables of protected references (docs/ref-rules.md): rule sets, users' emails and their
signing keys. A module of its own beside gitserver.db.models, which imports it so that every
table is on the one metadata.

Services take a Session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gitserver.db.base import Base, UTCDateTime, utcnow

KEY_SSH = "ssh"
KEY_GPG = "gpg"
SIGNING_KEY_KINDS = (KEY_SSH, KEY_GPG)


class RuleSet(Base):
    """One version of a repository's (or, with ``repo_id`` null, a tenant's) ordered rule list.

    Rows are only ever added: a change is a new row, so every ref update can name the row that
    judged it (``ref_updates.rules``) and the history says who changed what, when. The newest
    row of an owner is its list in force; ``previous_id`` is the row it replaced."""

    __tablename__ = "rule_sets"
    __table_args__ = (Index("ix_rule_sets_owner", "tenant_id", "repo_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repositories.id"))
    rules: Mapped[str] = mapped_column(Text, default="[]")  # the JSON list, as validated
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("rule_sets.id"))
    changed_by: Mapped[str] = mapped_column(String(300), default="")  # the principal, as shown
    changed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class UserEmail(Base):
    """One email address of a user, set by admins. A commit's committer email names, within a
    tenant, at most one user: the one whose keys may sign it."""

    __tablename__ = "user_emails"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    position: Mapped[int] = mapped_column(Integer, default=0)


class SigningKey(Base):
    """A key that signs commits and tags and does nothing else: an SSH public key (which,
    unlike a user's login keys, may be shared with no login), or a GPG public key."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "fingerprint"),
        CheckConstraint(f"kind IN {SIGNING_KEY_KINDS!r}", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    # SSH: SHA256:… of the key; GPG: the primary key's fingerprint, upper-case hex.
    fingerprint: Mapped[str] = mapped_column(String(80))
    key_data: Mapped[str] = mapped_column(Text)  # SSH: "type base64"; GPG: the armored key
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
