"""repour package: callbacks queued before the move name the token function's new module

A queued Repour callback job names the function that gives it the service account's bearer
token before each attempt (``auth`` in its payload). That function moved from
``gitserver.pipelines.repour`` to ``gitserver.repour.tokens``; jobs not yet finished are
pointed at the new name, so a callback queued before an upgrade is still sent with its token.

Revision ID: 0017_issue13
Revises: 0016_issue12
Create Date: 2026-11-26 15:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017_issue13'
down_revision = '0016_issue12'
branch_labels = None
depends_on = None

OLD = 'gitserver.pipelines.repour:service_token_headers'
NEW = 'gitserver.repour.tokens:service_token_headers'


def _rename(old: str, new: str) -> None:
    op.get_bind().execute(
        sa.text("UPDATE jobs SET payload = REPLACE(payload, :old, :new) WHERE payload LIKE :pattern"),
        {"old": old, "new": new, "pattern": f"%{old}%"})


def upgrade() -> None:
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)
