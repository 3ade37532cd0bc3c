"""Deleting (or changing) many rows a bounded batch at a time, each batch its own transaction,
so a retention pass never holds a long write lock and a worker's monitor is never busy for
long. What a pass leaves waits for the next one."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from gitserver.db.session import transaction


def in_batches(sessions: sessionmaker[Session], one_batch: Callable[[Session], int], size: int,
               max_batches: int) -> int:
    """Run ``one_batch`` (which handles at most ``size`` rows and returns how many it did) in
    a transaction of its own, until it does fewer than ``size`` or ``max_batches`` have run;
    the rows done in all."""
    done = 0
    for _ in range(max_batches):
        with transaction(sessions) as session:
            batch = one_batch(session)
        done += batch
        if batch < size:
            break
    return done
