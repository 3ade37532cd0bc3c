"""The web console's tables (docs/console.md): one-time sign-in links and browser sessions. A
module of its own beside gitserver.db.models, which imports it so that every table is on the
one metadata."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gitserver.db.base import Base, UTCDateTime, created_column


class ConsoleLogin(Base):
    """A one-time sign-in link of the web console (``ssh git@host login``). Only the SHA-256
    of its secret is stored; ``used_at`` is set by the one GET that redeems it."""

    __tablename__ = "console_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = created_column()
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds the secret, the row its SHA-256 and the CSRF
    token every form of that session carries."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = created_column()
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # A single sign-on's ID token: the id_token_hint of the logout at the issuer (None for a
    # session a link opened, or a token too long to keep).
    id_token: Mapped[str | None] = mapped_column(Text)

    user: Mapped[Any] = relationship("User", lazy="joined")  # models.User: not imported, no circle
