"""What every HTTP resource gets: the process's runtime, built once by ``create_app``."""

from __future__ import annotations

import dataclasses

from gitserver.config import Config
from gitserver.runtime import Runtime


@dataclasses.dataclass
class ApiContext:
    """What every resource gets: the runtime (config, sessions, store)."""

    runtime: Runtime

    @property
    def config(self) -> Config:
        return self.runtime.config
