"""When an SSH channel counts as silent (gitserver.ssh.silence), on the real event loop with
short timeouts."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from gitserver.ssh.silence import CHECKS, Traffic, until_silent

TIMEOUT = 0.2


def test_a_channel_where_nothing_moves_is_silent_after_the_timeout() -> None:
    started = time.monotonic()
    asyncio.run(until_silent(TIMEOUT, lambda: 42))
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT * (1 + 3 / CHECKS)


def test_a_channel_that_moves_a_byte_now_and_then_is_not_silent() -> None:
    counter = itertools.count()
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(until_silent(TIMEOUT, lambda: next(counter)), TIMEOUT * 4))


def test_output_waiting_for_the_clients_window_has_not_moved() -> None:
    """A client that stops reading: git's output sits in the channel's buffer, so it does not
    count, and it counts once the client's window lets it out."""
    class Channel:
        buffered = 0

        def get_write_buffer_size(self) -> int:
            return self.buffered

    channel = Channel()
    traffic = Traffic(received=100, written=5000)
    channel.buffered = 5000
    assert traffic.moved(channel) == 100
    channel.buffered = 1000
    assert traffic.moved(channel) == 4100
