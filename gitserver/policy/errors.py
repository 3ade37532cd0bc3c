"""One exception tree for the whole server.

Every domain error carries an HTTP status, a stable code and a message that is safe to show to
the user who caused it. Each transport maps the tree once: falcon with one error handler, the
SSH session with one ``except``, the hooks by printing the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class GitserverError(Exception):
    """Base of all errors whose message may be shown to a client.

    A subclass names its HTTP status, stable ``code`` and ``title`` (the API error body's) in
    its class line, ``class Gone(GitserverError, status=410, code="gone", title="Gone")``; one
    that names none keeps its parent's.
    """

    status: int = 500
    code: str = "internal"
    title: str = "Internal Server Error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          title: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status = cls.status if status is None else status
        cls.code = cls.code if code is None else code
        cls.title = cls.title if title is None else title

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(GitserverError, code="config", title="Configuration error"):
    """A setting that cannot work: the process refuses to start, naming the setting."""


class InvalidInput(GitserverError, status=400, code="invalid", title="Bad Request"):
    """Input that can never be right; ``field`` names the request field at fault."""


class Unauthenticated(GitserverError, status=401, code="unauthenticated", title="Unauthorized"):
    """No credentials, or ones that do not prove who is asking (a bad or expired token)."""


class Forbidden(GitserverError, status=403, code="forbidden", title="Forbidden"):
    """Who is asking is known, but may not do this (a push with read access, say)."""


class NotFound(GitserverError, status=404, code="not_found", title="Not Found"):
    """Missing, or hidden from this principal: the two must look the same."""


class PolicyRefused(GitserverError, status=405, code="refused_by_policy", title="Method Not Allowed"):
    """Refused by a rule of the platform (protected history), whoever asks."""


class Conflict(GitserverError, status=409, code="conflict", title="Conflict"):
    """Clashes with what is there (a name taken, a state moved on meanwhile)."""


class Gone(GitserverError, status=410, code="gone", title="Gone"):
    """What was there was deleted on purpose (a pruned pipeline log)."""


class PayloadTooLarge(GitserverError, status=413, code="too_large", title="Payload Too Large"):
    """A body or object over a size limit."""


class _RetryLater(GitserverError):
    """An error after which the same request may succeed: ``retry_after`` is the seconds to
    send in the Retry-After header (None: no header)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(_RetryLater, status=503, code="unavailable", title="Service Unavailable"):
    """The server cannot serve this now (the database is unreachable, say)."""


class TooManyRequests(_RetryLater, status=429, code="too_many_requests", title="Too Many Requests"):
    """Over a cap on what may run at once; the caller says when to come back."""


class InsufficientStorage(GitserverError, status=507, code="disk_full", title="Insufficient Storage"):
    """No space left for the change (a full disk, or a quota)."""


DISK_FULL_MESSAGE = ("the server's disk is full, so nothing was changed; reads still work, "
                     "try the change again once an administrator has freed space")
# SQLite's message for SQLITE_FULL, and PostgreSQL's SQLSTATE class 53 (insufficient resources):
# 53100 disk_full; 53000 and 53200 are out of memory or connections, not disk.
_SQLITE_FULL = "database or disk is full"
_PG_DISK_FULL = "53100"
_ENOSPC = (28, 122)  # ENOSPC, EDQUOT (Linux)
# The same from libgit2 or git, which report strerror() in their message text.
_ENOSPC_TEXT = ("No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps, e.g. SQLAlchemy's ``.orig``) means no space left:
    ENOSPC/EDQUOT from the OS, SQLite's "database or disk is full", PostgreSQL's disk_full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _ENOSPC:
            return True
        text = str(exc)
        if _SQLITE_FULL in text or getattr(exc, "sqlstate", None) == _PG_DISK_FULL:
            return True
        if any(marker in text for marker in _ENOSPC_TEXT):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


DATABASE_UNREACHABLE_MESSAGE = ("gitserver is temporarily unavailable: the database cannot be "
                                "reached; try again later")
DATABASE_RETRY_AFTER = 30  # seconds: long enough for a database restart or failover
# What the drivers say when there is no connection at all, or it died under us: psycopg's
# connection failures carry no SQLSTATE, so their text is all there is; SQLite has no server,
# so its only outage is a database file it cannot open (a missing or unmounted volume).
_UNREACHABLE_TEXT = (
    "connection refused", "could not connect", "connection failed", "no route to host",
    "server closed the connection unexpectedly", "terminating connection",
    "the connection is closed", "the connection is lost", "consuming input failed",
    "unable to open database file",
)
# SQLSTATE class 08 (connection exception) and 57P01-57P03 (admin/crash shutdown, cannot
# connect now): the server went away or is not yet accepting.
_PG_UNREACHABLE_PREFIXES = ("08", "57P01", "57P02", "57P03")
# Only these DB-API error classes can mean an outage: IntegrityError (a constraint),
# ProgrammingError or DataError (a bug) never do, whatever their text says.
_OUTAGE_CLASSES = ("OperationalError", "InterfaceError")


def is_database_unreachable(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) means the database cannot be reached: SQLAlchemy's
    DisconnectionError or an invalidated connection, or an OperationalError/InterfaceError
    (SQLAlchemy's or the driver's) whose SQLSTATE or text says there is no connection."""
    from sqlalchemy import exc as sa_exc  # here: the error tree itself stays import-light

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, sa_exc.DisconnectionError):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if type(exc).__name__ in _OUTAGE_CLASSES and _says_unreachable(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


def _says_unreachable(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith(_PG_UNREACHABLE_PREFIXES):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _UNREACHABLE_TEXT)


def database_unavailable() -> Unavailable:
    """The error every transport shows while the database is unreachable."""
    return Unavailable(DATABASE_UNREACHABLE_MESSAGE, retry_after=DATABASE_RETRY_AFTER)


@contextlib.contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Turn an unreachable database into :func:`database_unavailable` (503, Retry-After), so
    the front that renders GitserverErrors shows it; any other exception passes unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_database_unreachable(exc):
            raise
        raise database_unavailable() from exc


class BackupError(GitserverError, code="backup", title="Backup error"):
    """A backup or restore that cannot go on; the message says what to do."""
