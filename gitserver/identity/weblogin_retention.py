"""Deleting the web console's dead sign-in records (gitserver.identity.weblogin).

A one-time link is dead once used or expired, a browser session once signed out or expired:
no lookup can ever accept them again (``redeem`` and ``find_session`` check the same
columns), so they are deleted rather than kept growing. The worker's monitor runs
:func:`prune` with its other retention passes. Bounded: at most :data:`BATCH` rows a
transaction and :data:`MAX_BATCHES` transactions a pass per table (what is left waits for the
next pass), so a pass never holds a long write lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, NamedTuple

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gitserver.db import batches, models
from gitserver.db.base import utcnow

log = logging.getLogger(__name__)

BATCH = 500
MAX_BATCHES = 20


class Pruned(NamedTuple):
    """How many rows one pass deleted."""

    links: int
    sessions: int


def _dead_links(now: dt.datetime) -> Any:
    table = models.ConsoleLogin
    return or_(table.used_at.is_not(None), table.expires_at <= now)


def _dead_sessions(now: dt.datetime) -> Any:
    table = models.ConsoleSession
    return or_(table.ended_at.is_not(None), table.expires_at <= now)


def prune_batch(session: Session, table: Any, dead: Any) -> int:
    """Delete at most :data:`BATCH` rows of ``table`` matching ``dead``; how many."""
    ids = list(session.scalars(select(table.id).where(dead).order_by(table.id).limit(BATCH)))
    if ids:
        session.execute(delete(table).where(table.id.in_(ids)))
    return len(ids)


def prune(sessions: sessionmaker[Session], now: dt.datetime | None = None) -> Pruned:
    """One pass: delete used or expired links and ended or expired sessions."""
    now = now or utcnow()
    links = _dead_links(now)
    ended = _dead_sessions(now)
    pruned = Pruned(
        batches.in_batches(sessions, lambda s: prune_batch(s, models.ConsoleLogin, links), BATCH, MAX_BATCHES),
        batches.in_batches(sessions, lambda s: prune_batch(s, models.ConsoleSession, ended), BATCH, MAX_BATCHES))
    if pruned.links or pruned.sessions:
        log.info("deleted %d used or expired console sign-in links and %d ended or expired sessions",
                 pruned.links, pruned.sessions)
    return pruned
