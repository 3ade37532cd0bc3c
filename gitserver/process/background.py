"""A thread that works in the background for as long as a ``with`` block lasts (a lease's
renewals, a heartbeat): started when the block begins, told to stop and joined when it ends."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Runs :meth:`_run` in a daemon thread while the ``with`` block runs.

    At the block's end ``_done`` is set, which ``_run``'s loop watches, and the thread gets
    ``join_timeout`` seconds to finish; it is a daemon, so one that does not never holds up
    the process's exit.
    """

    join_timeout: float = 30.0

    def __init__(self, name: str) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=self.join_timeout)

    def _run(self) -> None:
        raise NotImplementedError
