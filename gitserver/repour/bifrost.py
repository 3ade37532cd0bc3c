"""Upload of the alignment log to Bifrost (PNC's log store), as Repour and Reqour do before
they send the /adjust callback: ``POST <bifrost>/final-log/upload``, multipart form data with
the log as ``logfile`` plus ``md5sum``, ``endTime``, ``loggerName`` and ``tag``, the request's
log context as headers and the service account's bearer token.

The Bifrost URL is operator configuration (``repour_bifrost_url``), so it is called directly,
like the token endpoint. An upload that fails is logged and the callback still goes out: PNC
needs the result more than the log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

UPLOAD_PATH = "/final-log/upload"
LOGGER_NAME = "org.jboss.pnc._userlog_.alignment-log"
TAG = "alignment-log"
ATTEMPTS = 3
TIMEOUT = 30.0


def upload_form(text: str, end_time: dt.datetime) -> tuple[dict[str, tuple[str, bytes, str]], dict[str, str]]:
    """The multipart ``files`` and ``data`` parts of one upload (pure)."""
    raw = text.encode("utf-8", "replace")
    files = {"logfile": ("alignment.log", raw, "application/octet-stream")}
    data = {"md5sum": hashlib.md5(raw, usedforsecurity=False).hexdigest(),
            "endTime": end_time.astimezone().isoformat(), "loggerName": LOGGER_NAME, "tag": TAG}
    return files, data


def upload_headers(context: Mapping[str, str], auth: Mapping[str, str]) -> dict[str, str]:
    """Bifrost files the log under the request's context (``log-process-context`` above all)."""
    headers = {name: value for name, value in context.items()}
    headers.setdefault("process-context-variant", "0")
    headers.update(auth)
    return headers


def upload_final_log(url: str, text: str, context: Mapping[str, str], auth: Mapping[str, str], *,
                     post: Callable[..., Any] | None = None, sleep: Callable[[float], None] = time.sleep,
                     now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> bool:
    """Upload ``text``; True when Bifrost accepted it (2xx), after at most :data:`ATTEMPTS`."""
    if post is None:
        import requests

        post = requests.post
    files, data = upload_form(text, now())
    headers = upload_headers(context, auth)
    target = url.rstrip("/") + UPLOAD_PATH
    for attempt in range(1, ATTEMPTS + 1):
        try:
            resp = post(target, files=files, data=data, headers=headers, timeout=TIMEOUT, allow_redirects=False)
            if 200 <= resp.status_code < 300:
                return True
            reason = f"HTTP {resp.status_code}"
        except OSError as exc:  # requests' errors are OSErrors
            reason = type(exc).__name__
        log.warning("Bifrost upload to %s failed (%s), attempt %d/%d", target, reason, attempt, ATTEMPTS)
        if attempt < ATTEMPTS:
            sleep(2.0 ** attempt)
    return False
