"""Recognising a full disk (gitserver.policy.errors.is_disk_full), whatever layer reports it, and the
metrics files that reserve their disk space instead of crashing (gitserver.observe.metrics)."""

from __future__ import annotations

import errno
import sqlite3

import pytest
import sqlalchemy.exc

from gitserver.policy.errors import is_disk_full


class _PgDiskFull(Exception):
    sqlstate = "53100"


class _PgTooManyConnections(Exception):
    sqlstate = "53300"


def _wrapped(orig: BaseException) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("UPDATE jobs ...", {}, orig)


def _chained() -> RuntimeError:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        try:
            raise RuntimeError("archive failed") from exc
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize("exc, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (_wrapped(sqlite3.OperationalError("database or disk is full")), True),
    (_wrapped(sqlite3.OperationalError("database is locked")), False),
    (_wrapped(_PgDiskFull("could not extend file")), True),
    (_wrapped(_PgTooManyConnections("too many clients")), False),
    (Exception("failed to initialize repository with template 'description': No space left on device"), True),
    (_chained(), True),
    (ValueError("bad input"), False),
    (None, False),
])
def test_is_disk_full(exc: BaseException | None, full: bool) -> None:
    assert is_disk_full(exc) is full
