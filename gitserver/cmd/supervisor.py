"""``gitserver serve``: one supervisor over the SSH daemon, the HTTP API and the workers.

Each part runs as its own process (``gitserver ssh|api|worker``), exactly as it would in a
scaled-out deployment; the supervisor restarts a part that dies and forwards SIGTERM/SIGINT
for a graceful stop.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

from gitserver.cmd.restarts import RestartSchedule
from gitserver.config import Config

log = logging.getLogger(__name__)
PARTS = ("ssh", "api", "worker")
LOOP_TICK = 0.2


def _spawn(part: str, config_file: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gitserver"]
    if config_file:
        argv += ["--config", config_file]
    return subprocess.Popen([*argv, part])


def serve(config: Config, config_file: str | None = None) -> int:
    from gitserver.observe import metrics
    from gitserver.observe.logs import setup_logging
    from gitserver.runtime import initialise

    metrics.setup(config, clean=True)
    setup_logging(config, "serve")
    for line in initialise(config):
        log.info("%s", line)
    print(f"gitserver: SSH on {config.ssh_base_url}, HTTP on {config.http_base_url}, "
          f"data in {config.data_dir}", file=sys.stderr, flush=True)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    schedule = RestartSchedule()
    children = {part: _spawn(part, config_file) for part in PARTS}
    for part in PARTS:
        schedule.started_at(part, time.monotonic())
    while not stopping:
        time.sleep(LOOP_TICK)
        _tend(children, schedule, config_file)
    return _stop_all(children, config.ssh_shutdown_grace + 5)


def _tend(children: dict[str, subprocess.Popen[bytes]], schedule: RestartSchedule,
          config_file: str | None) -> None:
    """Note newly dead parts and restart those whose backoff is over, without sleeping."""
    now = time.monotonic()
    for part, proc in children.items():
        if proc.poll() is not None and not schedule.waiting(part):
            delay = schedule.died_at(part, now)
            log.error("%s exited with %s; restarting in %.0fs", part, proc.returncode, delay)
    for part in schedule.ready(now):
        children[part] = _spawn(part, config_file)
        schedule.started_at(part, now)


def _stop_all(children: dict[str, subprocess.Popen[bytes]], grace: float) -> int:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0
