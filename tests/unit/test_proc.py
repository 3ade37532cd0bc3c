"""Stopping a child's process group (gitserver.process.children.stop_group), with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitserver.process.children import pid_alive, popen_wait, signal_group, stop_group


def _spawn(script: str) -> subprocess.Popen[bytes]:
    """``sh -c script`` leading its own process group, as every supervised child does."""
    return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # whatever a failed test left running
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _spawn_ready(children: list[subprocess.Popen[bytes]], script: str) -> subprocess.Popen[bytes]:
    """``script`` started in a group of its own, once it has printed ``ready``."""
    proc = _spawn(script)
    children.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_a_leader_that_obeys_sigterm_gets_nothing_else(children: list[subprocess.Popen[bytes]]) -> None:
    proc = _spawn_ready(children, "echo ready; exec sleep 60")
    stop_group(proc.pid, popen_wait(proc), grace=30)
    assert proc.returncode == -signal.SIGTERM


def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace(children: list[subprocess.Popen[bytes]]) -> None:
    proc = _spawn_ready(children, "trap '' TERM; echo ready; exec sleep 60")
    started = time.monotonic()
    stop_group(proc.pid, popen_wait(proc), grace=0.3)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started >= 0.3


def test_no_grace_means_sigkill_at_once(children: list[subprocess.Popen[bytes]]) -> None:
    proc = _spawn_ready(children, "echo ready; exec sleep 60")
    stop_group(proc.pid, popen_wait(proc), grace=0)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("sweep", [True, False])
def test_sweep_kills_what_the_leader_left_in_its_group(children: list[subprocess.Popen[bytes]],
                                                       sweep: bool) -> None:
    # The leader dies of SIGTERM; its background child ignores SIGTERM and lives on, unless
    # the SIGKILL goes out all the same (sweep, as for build steps).
    # It prints its pid only once SIGTERM is ignored (the ignoring is inherited across exec).
    proc = _spawn("(trap '' TERM; exec sh -c 'echo $$; exec sleep 60') & wait")
    children.append(proc)
    assert proc.stdout is not None
    orphan = int(proc.stdout.readline())
    stop_group(proc.pid, popen_wait(proc), grace=30, sweep=sweep)
    assert proc.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while sweep and _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(orphan) is not sweep
    if not sweep:
        os.kill(orphan, signal.SIGKILL)


def test_a_group_that_is_gone_is_not_signalled(children: list[subprocess.Popen[bytes]]) -> None:
    proc = _spawn("exit 0")
    proc.wait()
    assert signal_group(proc.pid, signal.SIGTERM) is False
    waits: list[float | None] = []
    stop_group(proc.pid, lambda t: waits.append(t) or False, grace=1)
    assert waits == []  # gave up at once: nothing to wait for


def test_pid_alive_sees_a_running_child_and_not_a_reaped_one() -> None:
    proc = _spawn("sleep 30")
    try:
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid)
    assert pid_alive(os.getpid())


def test_popen_wait_says_whether_the_child_exited_in_time() -> None:
    proc = _spawn("sleep 30")
    wait = popen_wait(proc)
    try:
        assert wait(0.05) is False
    finally:
        proc.kill()
    assert wait(5) is True and proc.returncode == -signal.SIGKILL
