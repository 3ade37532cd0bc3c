"""What every HTTP resource gets: the process's runtime, built once by ``create_app``."""

from __future__ import annotations

import dataclasses
import functools

from gitserver.config import Config
from gitserver.lfs.service import LfsService
from gitserver.runtime import Runtime


@dataclasses.dataclass
class ApiContext:
    """What every resource gets: the runtime (config, sessions, store)."""

    runtime: Runtime

    @property
    def config(self) -> Config:
        return self.runtime.config

    @functools.cached_property
    def lfs(self) -> LfsService:
        """The process's one LFS service (its object store client is built once, when first used)."""
        return LfsService(self.runtime.config, self.runtime.sessions, self.runtime.store)


class Resource:
    """A falcon resource of the API: made with the context (:func:`gitserver.api.paths.mount`)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
