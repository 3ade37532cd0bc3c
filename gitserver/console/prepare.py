"""Work too slow for a page, done once and kept: highlighted files, rendered Markdown, blame.

A page asks :meth:`Prepared.prepare` for a result by key (a blob id, a commit and a path: what
the result is a pure function of, so a kept result is never stale). A kept one comes back at
once; otherwise the work goes to the one background thread of this process and the page waits
at most ``wait`` seconds for it. Past that the page answers without it (plain text, "being
prepared") and the thread goes on: the result is kept for the next request. So no input makes
a page slower than its wait, and the work of a large file is done once per process, not once
per view.

Bounded: one thread, at most :data:`MAX_PENDING` jobs waiting (beyond that nothing is started
and the page shows its plain form; a later view asks again), and the kept results cost at
most ``max_cost`` (each result's cost is given by the caller: characters of HTML, lines of
blame), the least recently used dropped first. One instance per process, held by the
console's context (gunicorn's workers each build theirs after the fork; the thread starts at
the first job).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PENDING = 8
# A job no page waits for (``wait`` 0) starts this much later, so the page that asked for it is
# answered first: a busy thread would take the GIL from it every 5 ms (sys.getswitchinterval)
# and at each file read, query and template stat, which doubled the page's time (issue 28).
UNWAITED_START_SECONDS = 0.05
# Highlighted HTML is about 5 to 10 times its source: some 16 large files kept per process.
DEFAULT_MAX_COST = 32 * 1024 * 1024


@dataclasses.dataclass
class _Job:
    key: str
    work: Callable[[], Any]
    cost: Callable[[Any], int]
    done: threading.Event
    not_before: float  # time.monotonic() before which the thread does not start it


class Prepared:
    """Results by key, computed on one background thread and kept (least recently used
    dropped past ``max_cost``)."""

    def __init__(self, max_cost: int = DEFAULT_MAX_COST, max_pending: int = MAX_PENDING) -> None:
        self.max_cost = max_cost
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._kept: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self._cost = 0
        self._pending: dict[str, threading.Event] = {}
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._thread: threading.Thread | None = None

    def get(self, key: str) -> Any | None:
        """The kept result of ``key``, or None."""
        with self._lock:
            found = self._kept.get(key)
            if found is None:
                return None
            self._kept.move_to_end(key)
            return found[0]

    def prepare(self, key: str, work: Callable[[], T], wait: float, cost: Callable[[T], int]) -> T | None:
        """``key``'s result: kept, or made by ``work`` on the background thread within
        ``wait`` seconds; None when it is not ready by then (the thread goes on, and keeps it)
        or when too many jobs are waiting (then nothing is started). With ``wait`` 0 the job
        starts :data:`UNWAITED_START_SECONDS` later."""
        found = self.get(key)
        if found is not None:
            return found
        done = self._start(key, work, cost, 0.0 if wait > 0 else UNWAITED_START_SECONDS)
        if done is None or wait <= 0:
            return None
        done.wait(wait)
        return self.get(key)

    def now(self, key: str, work: Callable[[], T], cost: Callable[[T], int]) -> T:
        """``key``'s result, made here and now when it is not kept (for work known to be
        cheap), and kept."""
        found = self.get(key)
        if found is not None:
            return found
        result = work()
        self._keep(key, result, cost(result))
        return result

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _start(self, key: str, work: Callable[[], Any], cost: Callable[[Any], int],
               delay: float) -> threading.Event | None:
        with self._lock:
            if key in self._pending:
                return self._pending[key]
            if len(self._pending) >= self.max_pending:
                return None
            done = self._pending[key] = threading.Event()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="console-prepare", daemon=True)
                self._thread.start()
        self._jobs.put(_Job(key, work, cost, done, time.monotonic() + delay))
        return done

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            time.sleep(max(0.0, job.not_before - time.monotonic()))
            try:
                result = job.work()
                self._keep(job.key, result, job.cost(result))
            except Exception:  # a page shows its plain form; the next view tries again
                log.exception("console: preparing %s failed", job.key[:200])
            finally:
                with self._lock:
                    self._pending.pop(job.key, None)
                job.done.set()

    def _keep(self, key: str, result: Any, cost: int) -> None:
        if cost > self.max_cost:
            return
        with self._lock:
            old = self._kept.pop(key, None)
            if old is not None:
                self._cost -= old[1]
            self._kept[key] = (result, cost)
            self._cost += cost
            while self._cost > self.max_cost:
                _key, (_result, dropped) = self._kept.popitem(last=False)
                self._cost -= dropped
