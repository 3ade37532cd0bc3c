"""The one place where errors become HTTP responses.

Resources raise :mod:`gitserver.policy.errors` exceptions; :func:`register` maps that tree (and
falcon's own HTTP errors, and anything unexpected) to JSON bodies of the form docs/contract.md
(HTTP) fixes: ``{"title": …, "description": …}`` plus ``"field"`` when the error names one.
No traceback or exception text from an unexpected error ever reaches the client: it is logged
once here, with the request line, and the client gets a generic 500.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

import falcon

from gitserver.jsonshape import STRING, Out, Shape
from gitserver.policy.errors import (
    DISK_FULL_MESSAGE,
    GitserverError,
    InsufficientStorage,
    database_unavailable,
    is_database_unreachable,
    is_disk_full,
    outage_as_unavailable,
)

log = logging.getLogger(__name__)

REALM = "gitserver"
DISK_FULL_RETRY_AFTER = 60  # seconds

# falcon titles its errors like "404 Not Found"; ours are plain "Not Found".
_STATUS_PREFIX = re.compile(r"^\d{3}\s+")


# Every error answer of the REST API (the document's ``Error`` schema).
ERROR = Shape("Error", {
    "title": Out(STRING, given=True), "description": Out(STRING, given=True),
    "field": Out(STRING, "the request field that was refused", given=True, required=False)})


def error_body(title: str, description: str, field: str | None = None) -> dict[str, str]:
    return ERROR.render(title=title, description=description, **({"field": field} if field else {}))


@contextlib.contextmanager
def rendered_by(resp: falcon.Response, render: Callable[[falcon.Response, GitserverError], None],
                logger: logging.Logger, front: str, quiet: Collection[int] = ()) -> Iterator[None]:
    """A :class:`GitserverError` raised inside (an unreachable database as 503 too) answered by
    ``render``: for the fronts whose clients are git or git-lfs, which show a body of their own
    format to their user rather than the API's JSON. Errors of 500 and above are logged, but
    for the ``quiet`` statuses (expected conditions, such as a full quota)."""
    try:
        with outage_as_unavailable():  # an outage: the client shows why, and 503
            yield
    except GitserverError as exc:
        if exc.status >= 500 and exc.status not in quiet:
            logger.error("%s request failed: %s", front, exc.message)
        render(resp, exc)


def handle_gitserver_error(req: falcon.Request, resp: falcon.Response, ex: GitserverError,
                           params: dict[str, Any]) -> None:
    """A domain error: its status, its title, its message (safe to show by construction)."""
    if ex.status >= 500:
        # Still a known condition (configuration, unavailable database), but worth a log line.
        log.error("%s %s failed: %s", req.method, req.path, ex.message)
    resp.status = falcon.code_to_http_status(ex.status)
    if ex.status == 401 and not resp.get_header("WWW-Authenticate"):
        # RFC 9110: a 401 names the schemes it accepts. Both are offered: Bearer for API
        # clients, Basic because git's HTTP client only sends credentials after that challenge.
        resp.set_header("WWW-Authenticate", f'Bearer realm="{REALM}", Basic realm="{REALM}"')
    retry_after = getattr(ex, "retry_after", None)
    if retry_after:
        resp.set_header("Retry-After", str(retry_after))
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(ex.title, ex.message, ex.field)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception,
                      params: dict[str, Any]) -> None:
    """Anything else is a bug: log it once with the traceback, tell the client nothing more.

    Except a full disk (database or repositories): not a bug, and the client should know
    that nothing changed and that retrying later will work, so 507 with that said. And an
    unreachable database: an outage, not a bug, so 503 with ``Retry-After``."""
    if isinstance(ex, TimeoutError):
        # The client stalled while sending its body (the API worker's read timeout,
        # gitserver/api/worker.py): its fault, not ours, and no traceback is worth logging.
        log.info("%s %s: the client stopped sending its request", req.method, req.path)
        resp.status = falcon.HTTP_408
        resp.content_type = falcon.MEDIA_JSON
        resp.media = error_body("Request Timeout", "the request body did not arrive in time")
        resp.set_header("Connection", "close")
        return
    if is_disk_full(ex):  # (logged once, by handle_gitserver_error)
        handle_gitserver_error(req, resp, InsufficientStorage(DISK_FULL_MESSAGE), params)
        resp.set_header("Retry-After", str(DISK_FULL_RETRY_AFTER))
        return
    if is_database_unreachable(ex):  # the cause in one line; the 503 is logged by the handler
        log.warning("%s %s: database unreachable: %s", req.method, req.path, _first_line(ex))
        handle_gitserver_error(req, resp, database_unavailable(), params)
        return
    log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body("Internal Server Error",
                            "the server failed to handle this request; the error has been logged")


def _first_line(ex: BaseException) -> str:
    lines = str(getattr(ex, "orig", None) or ex).strip().splitlines()
    return lines[0] if lines else type(ex).__name__


def serialize_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError) -> None:
    """falcon's own errors (unknown route, method not allowed, bad query parameter) as the same
    JSON shape, whatever the client's Accept header says."""
    title = _STATUS_PREFIX.sub("", ex.title or "") or "Error"
    description = ex.description or _default_description(ex, req)
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(title, description)


def _default_description(ex: falcon.HTTPError, req: falcon.Request) -> str:
    if ex.status_code == 404:
        return f"no resource at {req.path}"
    if ex.status_code == 405:
        allowed = dict(ex.headers or {}).get("Allow", "")
        return f"{req.method} is not allowed on {req.path}" + (f"; allowed: {allowed}" if allowed else "")
    return _STATUS_PREFIX.sub("", ex.title or "") or "request failed"


def register(app: falcon.App) -> None:
    """Install the handlers on ``app``. falcon picks the most specific handler by MRO, so
    falcon's HTTPError keeps its own handler (which calls our serializer) and only exceptions
    that are neither HTTPError nor GitserverError reach :func:`handle_unexpected`."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(GitserverError, handle_gitserver_error)
    app.set_error_serializer(serialize_http_error)
