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


class Resource:
    """A falcon resource of the API: made with the context (:func:`gitserver.api.paths.mount`)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
