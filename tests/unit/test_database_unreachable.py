"""gitserver.policy.errors.is_database_unreachable on the real drivers' errors: an outage is told
apart from a constraint, a bug or a busy database."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from gitserver.policy.errors import is_database_unreachable


def _error_of(url: str, sql: str = "SELECT 1") -> BaseException:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    except Exception as exc:  # noqa: BLE001  (the error is what is tested)
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{sql} on {url} did not fail")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_postgresql_connection_refused_is_an_outage() -> None:
    pytest.importorskip("psycopg")
    exc = _error_of(f"postgresql+psycopg://u:p@127.0.0.1:{_closed_port()}/db?connect_timeout=5")
    assert isinstance(exc, sa_exc.OperationalError)
    assert is_database_unreachable(exc)


def test_sqlite_file_that_cannot_be_opened_is_an_outage(tmp_path: Path) -> None:
    assert is_database_unreachable(_error_of(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}"))


def test_constraint_bug_and_busy_errors_are_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    integrity = _error_of(url, "INSERT INTO t VALUES (1)")
    assert isinstance(integrity, sa_exc.IntegrityError)
    missing_table = _error_of(url, "SELECT * FROM nosuchtable")  # OperationalError in sqlite3
    assert isinstance(missing_table, sa_exc.OperationalError)
    for exc in (integrity, missing_table, _error_of(url, "SELEC 1"),
                sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
                ValueError("connection refused"), RuntimeError("bug")):
        assert not is_database_unreachable(exc), exc


def test_a_wrapped_outage_is_found_through_the_cause() -> None:
    inner = sa_exc.OperationalError("SELECT 1", {}, Exception("connection failed: Connection refused"))
    try:
        try:
            raise inner
        except sa_exc.OperationalError as exc:
            raise RuntimeError("lookup failed") from exc
    except RuntimeError as outer:
        assert is_database_unreachable(outer)
    assert is_database_unreachable(sa_exc.DisconnectionError("pool pre-ping failed"))
