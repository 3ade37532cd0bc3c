"""When the supervisor restarts a part that died: at once after a healthy run, with a
growing backoff only while it keeps dying (DESIGN §1).

Pure bookkeeping on a monotonic clock, so the supervisor's loop never sleeps for a backoff:
SIGTERM during one part's backoff stops everything at once, and another part dying meanwhile
is restarted on its own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
# A part that ran this long was healthy: its next death restarts it at once.
HEALTHY_RUN = 30.0


@dataclass
class RestartSchedule:
    backoff: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def started_at(self, part: str, now: float) -> None:
        self.started[part] = now
        self.due.pop(part, None)

    def died_at(self, part: str, now: float) -> float:
        """Record a death; return the delay before the restart."""
        if now - self.started.get(part, now) >= HEALTHY_RUN:
            self.backoff[part] = FIRST_BACKOFF
            delay = 0.0
        else:
            delay = self.backoff.get(part, FIRST_BACKOFF)
            self.backoff[part] = min(delay * 2, RESTART_BACKOFF_MAX)
        self.due[part] = now + delay
        return delay

    def waiting(self, part: str) -> bool:
        return part in self.due

    def ready(self, now: float) -> list[str]:
        return [part for part, at in self.due.items() if at <= now]
