"""The objects one gitserver process needs, built in one place and passed in (no globals)."""

from __future__ import annotations

import dataclasses
import logging
import os

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db.session import make_engine, make_session_factory
from gitserver.git.store import RepoStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Runtime:
    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    store: RepoStore

    @classmethod
    def create(cls, config: Config, *, pool_size: int = 5) -> Runtime:
        engine = make_engine(config.effective_database_url, pool_size=pool_size)
        return cls(config=config, engine=engine, sessions=make_session_factory(engine),
                   store=RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir))

    def dispose(self) -> None:
        self.engine.dispose()


def initialise(config: Config) -> list[str]:
    """Create what a data dir needs; idempotent. Returns what was created, for the CLI."""
    from gitserver.db.session import upgrade
    from gitserver.git.store import install_hooks

    done = []
    for path in (config.data_dir, config.repos_dir, config.host_key_dir):
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            done.append(f"created {path}")
    os.chmod(config.host_key_dir, 0o700)
    install_hooks(config.hooks_dir, config.data_dir)
    from gitserver.ssh.hostkeys import ensure_host_keys

    done += [f"created host key {path}" for path in ensure_host_keys(config.host_key_dir)]
    from gitserver.provenance.keys import ensure_key

    done += ensure_key(config.signing_dir, config.signing_key)
    upgrade(config.effective_database_url)
    return done
