"""The database half of a backup: a consistent snapshot, and its restore into an empty database.

SQLite: the sqlite3 online backup API copies the database page by page inside one read
transaction (WAL lets the server's writers go on meanwhile), so the copy is one instant of the
database. PostgreSQL: a REPEATABLE READ transaction exports its snapshot and ``pg_dump
--snapshot`` dumps exactly that instant, so the refs read in the transaction and the dump agree.
The dump is taken with the pg_dump of the server's major version (or a newer one) and restored
with pg_restore in one transaction: a failed restore leaves the target database as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from gitserver.backup import format as fmt
from gitserver.db.session import SQLITE_BUSY_TIMEOUT_MS, is_sqlite
from gitserver.policy.errors import BackupError

SQLITE, POSTGRESQL = "sqlite", "postgresql"
# Where Debian and Ubuntu install each major version's client tools side by side.
PG_BIN_DIRS = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin")
PG_TOOL_TIMEOUT = 24 * 3600.0


@dataclasses.dataclass
class Snapshot:
    """One instant of the database: its dump file and a session that reads the same instant."""

    dialect: str
    dump: Path
    session: Session
    schema_revision: str


def dialect(url: str) -> str:
    return SQLITE if is_sqlite(url) else POSTGRESQL


@contextlib.contextmanager
def snapshot(url: str, workdir: Path) -> Iterator[Snapshot]:
    """Dump the database at ``url`` into ``workdir`` and yield a session on the same instant."""
    if is_sqlite(url):
        with _sqlite_snapshot(url, workdir) as snap:
            yield snap
    else:
        with _postgresql_snapshot(url, workdir) as snap:
            yield snap


def _sqlite_path(url: str) -> Path:
    path = make_url(url).database
    if not path or path == ":memory:":
        raise BackupError(f"the database URL {url!r} names no SQLite file")
    return Path(path)


@contextlib.contextmanager
def _sqlite_snapshot(url: str, workdir: Path) -> Iterator[Snapshot]:
    source_path = _sqlite_path(url)
    if not source_path.is_file():
        raise BackupError(f"there is no database at {source_path} (run `gitserver init` first?)")
    dump = workdir / Path(fmt.DATABASE_SQLITE).name
    try:
        source = sqlite3.connect(source_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            target = sqlite3.connect(dump)
            try:
                source.backup(target)  # all pages in one step: one read transaction, one instant
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy the SQLite database {source_path}: {exc}") from exc
    engine = create_engine(f"sqlite:///{dump}", poolclass=NullPool)
    try:
        with Session(engine) as session:
            yield Snapshot(SQLITE, dump, session, _revision(session.connection()))
    finally:
        engine.dispose()


@contextlib.contextmanager
def _postgresql_snapshot(url: str, workdir: Path) -> Iterator[Snapshot]:
    dump = workdir / Path(fmt.DATABASE_POSTGRESQL).name
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                snapshot_id = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                major = _server_major(conn)
                conninfo, env = pg_conninfo(url)
                _run_pg_tool(pg_tool("pg_dump", major), "--format=custom", "--no-owner",
                             "--no-privileges", f"--snapshot={snapshot_id}", f"--file={dump}",
                             f"--dbname={conninfo}", env=env, what="pg_dump")
                with Session(bind=conn) as session:
                    yield Snapshot(POSTGRESQL, dump, session, _revision(conn))
    except SQLAlchemyError as exc:
        raise BackupError(f"could not read the database: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()


def _revision(conn: Connection) -> str:
    try:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    except SQLAlchemyError as exc:
        raise BackupError("the database has no schema version (run `gitserver db upgrade`)") from exc


def _server_major(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SHOW server_version_num").scalar_one()) // 10000


def pg_conninfo(url: str) -> tuple[str, dict[str, str]]:
    """The libpq connection string of a SQLAlchemy URL, and the environment carrying its
    password (kept off the command line, where every local user could read it)."""
    parsed = make_url(url)
    params: dict[str, str] = {}
    if parsed.host:
        params["host"] = parsed.host
    if parsed.port:
        params["port"] = str(parsed.port)
    if parsed.username:
        params["user"] = parsed.username
    if parsed.database:
        params["dbname"] = parsed.database
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    conninfo = " ".join(f"{key}={_libpq_quote(value)}" for key, value in params.items())
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    return conninfo, env


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_tool(name: str, server_major: int, search_path: str | None = None) -> str:
    """The ``name`` client tool (pg_dump, pg_restore) that can talk to a server of
    ``server_major``: that version's own first, else the first on PATH that is as new."""
    candidates = [str(Path(d.format(major=server_major)) / name) for d in PG_BIN_DIRS]
    found = shutil.which(name, path=search_path)
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            major = tool_major(candidate)
            if major is not None and major >= server_major:
                return candidate
    raise BackupError(f"{name} of PostgreSQL {server_major} (or newer) was not found: install the "
                      f"PostgreSQL {server_major} client tools or put them on PATH")


def tool_major(path: str) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_tool_major(out)


def parse_tool_major(version_output: str) -> int | None:
    """``pg_dump (PostgreSQL) 15.18 (Debian …)`` → 15; ``… 9.6.24`` → 9."""
    match = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", version_output)
    return int(match.group(1)) if match else None


def _run_pg_tool(*argv: str, env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=PG_TOOL_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"{what} could not run: {exc}") from exc
    if result.returncode != 0:
        detail = " ".join(result.stderr.strip().splitlines()[-3:]) or f"exit status {result.returncode}"
        raise BackupError(f"{what} failed: {detail}")


# -- restore ------------------------------------------------------------------------------

def ensure_empty(url: str) -> None:
    """Refuse a target database that holds anything: a restore never merges."""
    if is_sqlite(url):
        path = _sqlite_path(url)
        if path.exists() and path.stat().st_size > 0:
            raise BackupError(f"the target database {path} exists; restore needs an empty target "
                              "(a new database file that does not exist yet)")
        return
    try:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                count = conn.execute(text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")).scalar_one()
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot connect to the target database: {exc.__class__.__name__}") from exc
    if count:
        raise BackupError(f"the target database {make_url(url).database} is not empty ({count} tables); "
                          "restore needs an empty database (CREATE DATABASE a new one)")


def restore(url: str, dump: Path) -> None:
    """Load ``dump`` (this module's format for the URL's dialect) into the empty database."""
    if is_sqlite(url):
        path = _sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".restore-tmp")
        shutil.copyfile(dump, tmp)
        os.replace(tmp, path)
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            major = _server_major(conn)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot connect to the target database: {exc.__class__.__name__}") from exc
    finally:
        engine.dispose()
    conninfo, env = pg_conninfo(url)
    _run_pg_tool(pg_tool("pg_restore", major), "--single-transaction", "--exit-on-error",
                 "--no-owner", "--no-privileges", f"--dbname={conninfo}", str(dump),
                 env=env, what="pg_restore")


def undo(url: str) -> None:
    """Empty the target again after a restore that failed past loading the database."""
    if is_sqlite(url):
        path = _sqlite_path(url)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + suffix).unlink()
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            names = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
            for name in list(names):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS public."{name}" CASCADE')
            sequences = conn.execute(text(
                "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public'")).scalars()
            for name in list(sequences):
                conn.exec_driver_sql(f'DROP SEQUENCE IF EXISTS public."{name}" CASCADE')
    finally:
        engine.dispose()
