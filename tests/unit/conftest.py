"""What the unit tests that need a database share: a migrated database and a Runtime on it,
and the tenant/repository rows most of them start from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from gitserver import config as config_mod
from gitserver.db import models
from gitserver.db.session import upgrade
from gitserver.runtime import Runtime


def make_runtime(db_url: str, data_dir: Path, environ: Mapping[str, str] | None = None,
                 **settings: Any) -> Runtime:
    """A Runtime on ``db_url`` (migrated first) with its data under ``data_dir``."""
    upgrade(db_url)
    return Runtime.create(config_mod.load(environ=dict(environ or {}), data_dir=str(data_dir),
                                          database_url=db_url, **settings))


@pytest.fixture()
def runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A Runtime with the default settings on each database (a module may override this)."""
    rt = make_runtime(db_url, tmp_path)
    yield rt
    rt.dispose()


def add_repo(session: Session, tenant: str = "t", name: str = "r") -> models.Repository:
    """A new tenant and one repository in it, flushed (ids set)."""
    row = models.Tenant(name=tenant)
    session.add(row)
    session.flush()
    repo = models.Repository(tenant_id=row.id, name=name)
    session.add(repo)
    session.flush()
    return repo
