"""The alignment log upload to Bifrost: the form and headers Repour's bifrost client sends, and
retries that end (a callback never waits forever for a log store)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from gitserver.repour import bifrost

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


class Post:
    def __init__(self, statuses: list[int | Exception]) -> None:
        self.statuses = statuses
        self.calls: list[dict[str, Any]] = []

    def __call__(self, url: str, **kwargs: Any) -> Any:
        self.calls.append({"url": url, **kwargs})
        status = self.statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        return type("Resp", (), {"status_code": status})()


def test_upload_shape() -> None:
    post = Post([200])
    context = {"log-process-context": "build-7", "traceparent": "00-abc-def-01"}
    assert bifrost.upload_final_log("http://bifrost/", "aligned\n", context, {"Authorization": "Bearer t"},
                                    post=post, now=lambda: NOW)
    call = post.calls[0]
    assert call["url"] == "http://bifrost/final-log/upload"
    assert call["files"]["logfile"][1] == b"aligned\n"
    assert call["data"]["md5sum"] == hashlib.md5(b"aligned\n").hexdigest()
    assert call["data"]["loggerName"] == "org.jboss.pnc._userlog_.alignment-log"
    assert call["data"]["tag"] == "alignment-log"
    assert call["headers"] == {"log-process-context": "build-7", "traceparent": "00-abc-def-01",
                               "process-context-variant": "0", "Authorization": "Bearer t"}


def test_upload_retries_then_gives_up() -> None:
    sleeps: list[float] = []
    post = Post([503, ConnectionError("refused"), 500])
    assert not bifrost.upload_final_log("http://bifrost", "x", {}, {}, post=post, sleep=sleeps.append, now=lambda: NOW)
    assert len(post.calls) == bifrost.ATTEMPTS and sleeps == [2.0, 4.0]
    assert bifrost.upload_final_log("http://bifrost", "x", {}, {}, post=Post([500, 201]), sleep=sleeps.append,
                                    now=lambda: NOW)
