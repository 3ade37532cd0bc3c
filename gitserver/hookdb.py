"""The post-receive hook's fallback: record the push straight into the database.

Used when git was started by something other than the SSH session (the server's own pushes,
e.g. Repour's /clone), which has no socket to hand the push to. Importing SQLAlchemy costs
a few hundred milliseconds, which is why the SSH path does not come here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gitserver import config as config_mod
from gitserver.db.session import make_engine, make_session_factory, transaction
from gitserver.pipelines.queue import PushContext, pipeline_url, record_push


def context_from_environment(environ: Mapping[str, str]) -> PushContext:
    def int_or_none(name: str) -> int | None:
        value = environ.get(name)
        return int(value) if value else None

    repo_id = int_or_none("GITSERVER_REPO_ID")
    if repo_id is None:
        raise RuntimeError("GITSERVER_REPO_ID is not set: git was not started by gitserver")
    return PushContext(repo_id=repo_id, user_id=int_or_none("GITSERVER_USER_ID"),
                       key_id=int_or_none("GITSERVER_KEY_ID"),
                       key_fingerprint=environ.get("GITSERVER_KEY_FINGERPRINT", ""),
                       protocol=environ.get("GITSERVER_PUSH_PROTOCOL", "internal"),
                       client_address=environ.get("GITSERVER_CLIENT_ADDRESS", ""))


def record_from_environment(environ: Mapping[str, str], payload: dict[str, object]) -> dict[str, object]:
    cfg = config_mod.load(environ=dict(environ))
    ctx = context_from_environment(environ)
    engine = make_engine(cfg.effective_database_url, pool_size=1)
    try:
        with transaction(make_session_factory(engine)) as session:
            updates = [tuple(u) for u in payload["updates"]]  # type: ignore[union-attr]
            _push, pipeline = record_push(session, ctx, updates)  # type: ignore[arg-type]
            pipeline_id = pipeline.id if pipeline else None
    finally:
        engine.dispose()
    if pipeline_id is None:
        return {"messages": []}
    return {"messages": [f"pipeline {pipeline_id} queued: {pipeline_url(cfg.http_base_url, pipeline_id)}"]}
