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


class PayloadTooLarge(GitserverError):
    status = 413
    code = "too_large"
    title = "Payload Too Large"


class Unavailable(GitserverError):
    status = 503
    code = "unavailable"
    title = "Service Unavailable"
