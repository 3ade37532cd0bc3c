"""Migration 0017: a Repour callback queued before the Repour package moved still gets its
service-account token (its job names the token function by module path)."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from gitserver.db import models
from gitserver.db.session import alembic_config, transaction
from gitserver.pipelines import notify
from gitserver.repour.callbacks import TOKEN_HEADERS_FUNCTION

OLD = "gitserver.pipelines.repour:service_token_headers"


def test_queued_callbacks_name_the_token_function_at_its_new_path(db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0016_issue12")
    engine = create_engine(db_url)
    sessions = sessionmaker(engine)
    try:
        with transaction(sessions) as session:
            session.add(models.Job(kind="callback", payload=json.dumps({"delivery_id": 1, "auth": OLD})))
            session.add(models.Job(kind="webhook", payload=json.dumps({"delivery_id": 2})))
        command.upgrade(cfg, "head")
        with transaction(sessions) as session:
            payloads = [json.loads(p) for p in session.scalars(select(models.Job.payload).order_by(models.Job.id))]
        assert payloads == [{"delivery_id": 1, "auth": TOKEN_HEADERS_FUNCTION}, {"delivery_id": 2}]
        assert callable(notify._auth_function(payloads[0]["auth"]))
        command.downgrade(cfg, "0016_issue12")
        with transaction(sessions) as session:
            first = session.scalars(select(models.Job.payload).order_by(models.Job.id)).first()
            assert json.loads(first or "{}")["auth"] == OLD
    finally:
        engine.dispose()
