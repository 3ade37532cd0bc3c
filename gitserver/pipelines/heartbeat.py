"""Heartbeats of a running /adjust, as Reqour sends them (pnc-api ``HeartbeatConfig``).

dingrogu gives Reqour's /adjust a ``heartbeatConfig {request, delay, delayTimeUnit}``; Rex,
which drives the task, fails it when the beats stop. Reqour (pnc-common's HeartbeatScheduler)
sends ``request`` at once and then every ``delay`` while the alignment runs. So does
:class:`Heartbeat`, from the worker that runs the job. The request's URL is the caller's
choice, so it goes through :mod:`gitserver.net.netguard` like callbacks do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gitserver.net import netguard
from gitserver.process.background import Background

log = logging.getLogger(__name__)

# java.util.concurrent.TimeUnit → seconds.
TIME_UNITS = {"NANOSECONDS": 1e-9, "MICROSECONDS": 1e-6, "MILLISECONDS": 1e-3, "SECONDS": 1.0,
              "MINUTES": 60.0, "HOURS": 3600.0, "DAYS": 86400.0}
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
# A beat more often than this would be load, not liveness; less often than this, no beat at all.
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Beat:
    """The request a build's ``heartbeat`` asks the worker to send every ``interval`` seconds
    while the build runs (validated: its URL went through the network guard)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    interval: float


def parse_config(config: Any) -> Beat | None:
    """The beat a (validated) ``heartbeatConfig`` asks for; None when there is none."""
    if not isinstance(config, Mapping) or not isinstance(config.get("request"), Mapping):
        return None
    request = config["request"]
    url = request.get("uri") or request.get("url")
    delay = config.get("delay")
    unit = TIME_UNITS.get(str(config.get("delayTimeUnit") or "MILLISECONDS"))
    if not isinstance(url, str) or not isinstance(delay, (int, float)) or unit is None:
        return None
    headers = {h["name"]: h["value"] for h in request.get("headers") or ()
               if isinstance(h, Mapping) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)}
    attachment = request.get("attachment")
    body = b"" if attachment is None else json.dumps(attachment).encode()
    if body:
        headers.setdefault("Content-Type", "application/json")
    interval = min(MAX_INTERVAL, max(MIN_INTERVAL, float(delay) * unit))
    return Beat(method=str(request.get("method") or "POST"), url=url, headers=headers, body=body,
                interval=interval)


Sender = Callable[..., Any]


class Heartbeat(Background):
    """Sends ``beat`` at once and every ``beat.interval`` until the block ends; a failed beat
    is logged and the next one tried (like Reqour's)."""

    join_timeout = TIMEOUT + 5  # a beat in flight ends within its own request timeout

    def __init__(self, beat: Beat | None, *, allow_private: bool, send: Sender = netguard.send) -> None:
        self.beat = beat
        self.allow_private = allow_private
        self.send = send
        self.sent = 0
        super().__init__("reqour-heartbeat")

    def _run(self) -> None:
        beat = self.beat
        while beat is not None and not self._done.is_set():
            try:
                self.send(beat.method, beat.url, body=beat.body, headers=beat.headers, timeout=TIMEOUT,
                          allow_private=self.allow_private)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001  (the next beat may get through)
                log.warning("heartbeat to %s failed: %s", beat.url, type(exc).__name__)
            self._done.wait(beat.interval)
