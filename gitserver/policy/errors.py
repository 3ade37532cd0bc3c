"""One exception tree for the whole server.

Every domain error carries an HTTP status, a stable code and a message that is safe to show to
the user who caused it. Each transport maps the tree once: falcon with one error handler, the
SSH session with one ``except``, the hooks by printing the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GitserverError(Exception):
    """Base of all errors whose message may be shown to a client."""

    status: int = 500
    code: str = "internal"
    title: str = "Internal Server Error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(GitserverError):
    code = "config"
    title = "Configuration error"


class InvalidInput(GitserverError):
    status = 400
    code = "invalid"
    title = "Bad Request"


class Unauthenticated(GitserverError):
    status = 401
    code = "unauthenticated"
    title = "Unauthorized"


class Forbidden(GitserverError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(GitserverError):
    """Missing, or hidden from this principal: the two must look the same."""

    status = 404
    code = "not_found"
    title = "Not Found"


class PolicyRefused(GitserverError):
    """Refused by a rule of the platform (protected history), whoever asks."""

    status = 405
    code = "refused_by_policy"
    title = "Method Not Allowed"


class Conflict(GitserverError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(GitserverError):
    """What was there was deleted on purpose (a pruned pipeline log)."""

    status = 410
    code = "gone"
    title = "Gone"


class PayloadTooLarge(GitserverError):
    status = 413
    code = "too_large"
    title = "Payload Too Large"


class Unavailable(GitserverError):
    status = 503
    code = "unavailable"
    title = "Service Unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for the Retry-After header (None: not sent)


class TooManyRequests(GitserverError):
    status = 429
    code = "too_many_requests"
    title = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for the Retry-After header


class InsufficientStorage(GitserverError):
    status = 507
    code = "disk_full"
    title = "Insufficient Storage"


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


class BackupError(GitserverError):
    """A backup or restore that cannot go on; the message says what to do."""

    code = "backup"
    title = "Backup error"
