"""The callback-credentials migration (revision 0017_issue13): callback jobs queued before it
named their header function as "module:function"; after it they carry a name of
outbox.CREDENTIALS, and back on downgrade."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from gitserver.db.session import alembic_config
from gitserver.pipelines import outbox

REVISION = "0017_issue13"
OLD = "gitserver.pipelines.repour:service_token_headers"


def _payloads(url: str) -> dict[int, dict[str, object]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {i: json.loads(p) for i, p in conn.execute(sa.text("SELECT id, payload FROM jobs"))}
    finally:
        engine.dispose()


def test_callback_jobs_get_the_credentials_name_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = alembic_config(url)
    before = ScriptDirectory.from_config(cfg).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    command.upgrade(cfg, before)
    rows = [("callback", {"delivery_id": 1, "auth": OLD}),
            ("callback", {"delivery_id": 2}),
            ("webhook", {"delivery_id": 3, "auth": OLD}),  # not a callback: left alone
            ("callback", {"delivery_id": 4, "auth": "something-else"})]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for kind, payload in rows:
            conn.execute(sa.text("INSERT INTO jobs (kind, payload, status, attempts, run_after, "
                                 "cancel_requested, last_error, created_at, updated_at) VALUES "
                                 "(:kind, :payload, 'queued', 0, CURRENT_TIMESTAMP, 0, '', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                         {"kind": kind, "payload": json.dumps(payload)})
    engine.dispose()

    command.upgrade(cfg, REVISION)
    after = _payloads(url)
    assert [after[i].get("auth") for i in sorted(after)] == [
        outbox.CREDENTIALS_SERVICE_TOKEN, None, OLD, "something-else"]
    assert after[1] == {"delivery_id": 1, "auth": "service-token"}

    command.downgrade(cfg, before)
    assert [p.get("auth") for _, p in sorted(_payloads(url).items())] == [OLD, None, OLD, "something-else"]
