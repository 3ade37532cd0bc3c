"""Checking many raw ed25519 signatures at once: what ``gitserver verify`` and ``check`` spend
their time on (three per push in a reference log: the log entry and two attestations).

libsodium (through PyNaCl) checks one signature in about half the CPU that OpenSSL takes
through ``cryptography``, and it releases the GIL while it works, so a list is split over a
thread per core. Signing stays with ``cryptography`` (:mod:`gitserver.provenance.signer`):
this module only verifies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions

SIGNATURE_BYTES = 64
KEY_BYTES = 32
# Below this many signatures a thread pool costs more than it saves.
PARALLEL_FROM = 256
# Signatures per task: enough that queueing costs nothing beside them (~60 µs each), few
# enough that the threads start while the caller is still adding.
CHUNK = 512
MAX_WORKERS = 8


class Check(NamedTuple):
    """One signature to check: the raw 32-byte public key, the 64-byte signature, the data."""

    key: bytes
    signature: bytes
    data: bytes


def valid(check: Check) -> bool:
    """Whether ``check.signature`` is ``check.key``'s over ``check.data``."""
    if len(check.key) != KEY_BYTES or len(check.signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(check.signature + check.data, check.key)
    except nacl.exceptions.CryptoError:  # BadSignatureError, or a key libsodium refuses
        return False
    return True


def _valid_all(checks: Sequence[Check]) -> list[bool]:
    return [valid(c) for c in checks]


def workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


Results = Callable[[], list[bool]]


class Checker:
    """Checks signatures on a thread per core while the caller goes on preparing more (its
    Python work and libsodium's run side by side: libsodium releases the GIL).

    ``add`` queues checks and answers a function that waits for their results; a short list
    is checked at once, on the caller's thread. Use it as a context manager: leaving it waits
    for what is queued and stops the threads."""

    def __init__(self) -> None:
        self._count = workers()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def add(self, checks: Sequence[Check]) -> Results:
        if len(checks) < PARALLEL_FROM or self._count == 1:
            done = _valid_all(checks)
            return lambda: done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._count, thread_name_prefix="ed25519")
        futures = [self._pool.submit(_valid_all, checks[i:i + CHUNK]) for i in range(0, len(checks), CHUNK)]
        return lambda: [ok for future in futures for ok in future.result()]


class Batch:
    """Checks added one at a time, handed to the checker's threads a chunk at a time as they
    come (they verify while the caller is still reading the next ones)."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker
        self._pending: list[Check] = []
        self._parts: list[Results] = []
        self.count = 0

    def append(self, check: Check) -> None:
        self._pending.append(check)
        self.count += 1
        if len(self._pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._parts.append(self._checker.add(self._pending))
            self._pending = []

    def results(self) -> Results:
        """A function that waits for every check added and answers their results in order."""
        self._flush()
        parts = self._parts
        return lambda: [ok for part in parts for ok in part()]


def valid_all(checks: Sequence[Check]) -> list[bool]:
    """Each check's result, in order; on every core for a long list."""
    with Checker() as checker:
        return checker.add(checks)()
