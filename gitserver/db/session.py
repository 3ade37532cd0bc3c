"""Engine and session factory, and running the migrations.

SQLite gets WAL and a busy timeout (several processes write: the SSH daemon, gunicorn workers,
pipeline workers); PostgreSQL gets a pool with pre-ping so a restarted database is survived.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    import sqlite3

    # alembic is imported only when migrating: most processes never need it.
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The alembic scripts ship inside the package, so an installed wheel finds them wherever pip
# put it.
MIGRATIONS_PACKAGE = "gitserver.db"
MIGRATIONS_DIR_NAME = "migrations"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine for ``url`` with the settings each backend needs."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True,
                         pool_recycle=1800)


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # pysqlite's own transaction handling is disabled so that BEGIN IMMEDIATE below is the
    # only one: it takes the write lock at the start, which makes busy_timeout apply instead of
    # failing with "database is locked" when two writers upgrade a read lock at once.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def migrations_dir() -> Path:
    """The directory of the alembic environment (env.py, versions/) inside the installed package."""
    # alembic reads scripts from a real directory; a wheel installed by pip is always unpacked.
    return Path(str(resources.files(MIGRATIONS_PACKAGE).joinpath(MIGRATIONS_DIR_NAME)))


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched. Session.execute is typed as returning
    Result, which has no rowcount; for those statements it is a CursorResult, which does."""
    return cast("CursorResult[Any]", result).rowcount


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest migration."""
    from alembic import command

    if is_sqlite(url):
        path = make_url(url).database
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
