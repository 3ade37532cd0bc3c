"""One exception tree for the whole server.

Every domain error carries an HTTP status, a stable code and a message that is safe to show to
the user who caused it. Each transport maps the tree once: falcon with one error handler, the
SSH session with one ``except``, the hooks by printing the message.
"""

from __future__ import annotations


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


class BackupError(GitserverError):
    """A backup or restore that cannot go on; the message says what to do."""

    code = "backup"
    title = "Backup error"
