"""What the CLI's exit status says, from an HTTP status or a local failure."""

from __future__ import annotations

from http import HTTPStatus

EXIT_OK = 0
EXIT_ERROR = 1  # bad input, a refusal by policy, a conflict, anything else
EXIT_USAGE = 2  # argparse's own: a command line it cannot parse
EXIT_NOT_FOUND = 3
EXIT_NOT_ALLOWED = 4  # not allowed, or not signed in

_BY_STATUS: dict[int, int] = {
    HTTPStatus.NOT_FOUND: EXIT_NOT_FOUND,
    HTTPStatus.UNAUTHORIZED: EXIT_NOT_ALLOWED,
    HTTPStatus.FORBIDDEN: EXIT_NOT_ALLOWED,
}


def exit_code(status: int) -> int:
    """The exit status for an HTTP status: 0 for success, 3 and 4 as above, otherwise 1."""
    if 200 <= status < 400:
        return EXIT_OK
    return _BY_STATUS.get(status, EXIT_ERROR)


class ClientError(Exception):
    """A failure to show as one line on stderr; ``status`` is the HTTP status it stands for
    (400 when it is bad input found before any request)."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)


def error_message(status: int, body: object, text: str) -> str:
    """The line to show for an error answer: the API's ``description`` (docs/contract.md), else its
    title, else the status's phrase."""
    if isinstance(body, dict):
        for key in ("description", "title"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"HTTP {status} {phrase}" + (f": {first}" if first and not first.startswith("<") else "")
