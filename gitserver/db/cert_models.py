"""The SSH certificate tables (docs/certificates.md): trusted user CAs of a tenant, principal
records and revocations. A module of its own beside gitserver.db.models, which imports it so
that every table is on the one metadata."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gitserver.db.base import Base, created_column


class SshCa(Base):
    """A user CA a tenant trusts (docs/certificates.md): certificates it signs log in as
    the users of this tenant their principals name. Site-wide CAs come from the configuration."""

    __tablename__ = "ssh_cas"
    __table_args__ = (UniqueConstraint("tenant_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # Looked up by fingerprint at every certificate login.
    fingerprint: Mapped[str] = mapped_column(String(80), index=True)
    key_data: Mapped[str] = mapped_column(Text)  # the CA's public key line, without comment
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = created_column()

    tenant: Mapped[Any] = relationship("Tenant", lazy="joined")  # models.Tenant: not imported, no circle


class SshPrincipal(Base):
    """A certificate principal that names one user. Unique site-wide: a site CA looks it up in
    every tenant, so two tenants holding the same name would make it name two users."""

    __tablename__ = "ssh_principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    principal: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = created_column()

    user: Mapped[Any] = relationship("User", lazy="joined")  # models.User: not imported, no circle


class SshCaRevocation(Base):
    """A certificate of one tenant CA refused by serial or by key id (exactly one is set)."""

    __tablename__ = "ssh_ca_revocations"
    __table_args__ = (
        CheckConstraint("(serial IS NULL) <> (key_id IS NULL)", name="one_of"),
        UniqueConstraint("ca_id", "serial"),
        UniqueConstraint("ca_id", "key_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("ssh_cas.id", ondelete="CASCADE"), index=True)
    # Serials are unsigned 64-bit: more than a signed BIGINT holds, so decimal text.
    serial: Mapped[str | None] = mapped_column(String(20))
    key_id: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = created_column()
