"""callback credentials by name: a callback job's "auth" names a closed set, not a function

Until now a callback job's payload stored the header function as ``"module:function"`` and the
sender imported it. Now it stores a name from ``notify.CREDENTIALS`` and the worker maps the
name to its function in code. Queued and finished callback jobs are converted; the data stays
JSON, so the schema does not change.

The revision id keeps the name it was released with (databases already upgraded record
it); the file is named by what the migration does.

Revision ID: 0017_issue13
Revises: 0016_issue12
Create Date: 2026-11-26 15:40:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0017_issue13'
down_revision = '0016_issue12'
branch_labels = None
depends_on = None

# The only function ever stored, and its name now (notify.CREDENTIALS_SERVICE_TOKEN); the
# values are written out here because a migration must not change when the code does.
RENAMES = {"gitserver.pipelines.repour:service_token_headers": "service-token"}

jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                sa.column('payload', sa.Text))


def _convert(mapping: dict[str, str]) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.payload)
                        .where(jobs.c.kind == 'callback', jobs.c.payload.like('%"auth"%'))).all()
    for job_id, text in rows:
        try:
            payload = json.loads(text)
        except ValueError:
            continue  # not JSON: the job fails on its own when run, as it did before
        if not isinstance(payload, dict) or payload.get("auth") not in mapping:
            continue
        payload["auth"] = mapping[payload["auth"]]
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(payload=json.dumps(payload)))


def upgrade() -> None:
    _convert(RENAMES)


def downgrade() -> None:
    _convert({new: old for old, new in RENAMES.items()})
