"""Heartbeats of a running adjust (pnc-api HeartbeatConfig, as dingrogu sends it to Reqour)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gitserver.pipelines import heartbeat

CONFIG = {"request": {"method": "POST", "uri": "http://rex.example.org/rest/tasks/7/heartbeat",
                      "headers": [{"name": "Authorization", "value": "Bearer t"}], "attachment": {"id": 7}},
          "delay": 30, "delayTimeUnit": "SECONDS"}


def test_parse_config() -> None:
    beat = heartbeat.parse_config(CONFIG)
    assert beat == heartbeat.Beat(method="POST", url="http://rex.example.org/rest/tasks/7/heartbeat",
                                  headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
                                  body=b'{"id": 7}', interval=30.0)
    assert heartbeat.parse_config(None) is None
    assert heartbeat.parse_config({"request": CONFIG["request"], "delay": "x"}) is None
    assert heartbeat.parse_config({**CONFIG, "delay": 1, "delayTimeUnit": "NANOSECONDS"}).interval == \
        heartbeat.MIN_INTERVAL  # type: ignore[union-attr]
    assert heartbeat.parse_config({**CONFIG, "delay": 2, "delayTimeUnit": "DAYS"}).interval == \
        heartbeat.MAX_INTERVAL  # type: ignore[union-attr]


@pytest.mark.timeout(30)
def test_beats_until_the_block_ends_and_survive_failures() -> None:
    calls: list[tuple[str, str]] = []
    three = threading.Event()

    def send(method: str, url: str, **kwargs: Any) -> None:
        calls.append((method, url))
        if len(calls) == 2:
            raise OSError("connection refused")  # the next beat is still tried
        if len(calls) >= 3:
            three.set()

    beat = heartbeat.parse_config({**CONFIG, "delay": 100, "delayTimeUnit": "MILLISECONDS"})
    with heartbeat.Heartbeat(beat, allow_private=False, send=send) as hb:
        assert three.wait(20)
    count = len(calls)
    assert hb.sent >= 2 and calls[0] == ("POST", CONFIG["request"]["uri"])
    three.clear()
    assert not three.wait(0.5) and len(calls) == count, "no beat after the block"


def test_no_config_no_thread() -> None:
    with heartbeat.Heartbeat(None, allow_private=False, send=lambda *a, **k: pytest.fail("sent")) as hb:
        pass
    assert hb.sent == 0
