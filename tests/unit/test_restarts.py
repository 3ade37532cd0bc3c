"""The supervisor's restart schedule: backoff only while a part keeps dying."""

from gitserver.cmd.restarts import HEALTHY_RUN, RestartSchedule


def test_backoff_grows_while_a_part_keeps_dying():
    s = RestartSchedule()
    delays = []
    now = 0.0
    for _ in range(4):
        s.started_at("api", now)
        delays.append(s.died_at("api", now + 0.5))
        now += delays[-1] + 0.5
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_a_part_that_ran_healthily_restarts_at_once():
    s = RestartSchedule()
    for i in range(4):
        s.started_at("api", i * 10.0)
        s.died_at("api", i * 10.0 + 1)
    s.started_at("api", 100.0)
    assert s.died_at("api", 100.0 + HEALTHY_RUN) == 0.0
    s.started_at("api", 200.0)
    assert s.died_at("api", 201.0) == 1.0


def test_parts_are_scheduled_independently():
    s = RestartSchedule()
    for part in ("api", "ssh"):
        s.started_at(part, 0.0)
    for _ in range(3):
        s.died_at("api", 1.0)
    s.died_at("ssh", 1.0)
    assert s.ready(2.0) == ["ssh"]
    assert s.waiting("api")


def test_the_supervisor_loop_never_sleeps_through_a_backoff(monkeypatch):
    """A part in its backoff holds up neither the loop nor another part's restart."""
    import subprocess
    import sys
    import time

    from gitserver.cmd import supervisor

    spawned = []

    def spawn(part, _config_file):
        spawned.append(part)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    schedule = RestartSchedule()
    schedule.started_at("api", time.monotonic())
    schedule.started_at("ssh", time.monotonic())
    schedule.backoff["api"] = 8.0
    children = {"api": dead, "ssh": dead}
    schedule.started["ssh"] -= HEALTHY_RUN
    began = time.monotonic()
    supervisor._tend(children, schedule, None)
    try:
        assert time.monotonic() - began < 1.0
        assert spawned == ["ssh"] and schedule.waiting("api")
    finally:
        for proc in children.values():
            if proc is not dead:
                proc.kill()
                proc.wait()
