"""Recording pushes and queueing their pipelines, in one transaction.

The caller owns the session and commits; the push, its ref updates, the pipeline and the job
row become visible together or not at all.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.git import refs
from gitserver.pipelines import jobs, notify


@dataclasses.dataclass(frozen=True)
class PushContext:
    """Who pushed, with which key, from where: the audit facts of one push."""

    repo_id: int
    user_id: int | None = None
    key_id: int | None = None
    key_fingerprint: str = ""
    protocol: str = "ssh"
    client_address: str = ""


def record_push(session: Session, ctx: PushContext,
                updates: list[tuple[str, str, str]]) -> tuple[models.Push, models.Pipeline | None]:
    """Record an accepted push and queue one pipeline for it (None when nothing to build:
    a push that only created tags pointing at nothing new still gets one, deletes never
    happen)."""
    push = models.Push(repo_id=ctx.repo_id, user_id=ctx.user_id, public_key_id=ctx.key_id,
                       key_fingerprint=ctx.key_fingerprint, protocol=ctx.protocol,
                       client_address=ctx.client_address)
    push.ref_updates = [models.RefUpdate(ref=ref, old=old, new=new) for old, new, ref in updates]
    session.add(push)
    session.flush()
    pipeline = enqueue_push_pipeline(session, push)
    notify_push(session, push, pipeline)
    return push, pipeline


def notify_push(session: Session, push: models.Push, pipeline: models.Pipeline | None) -> None:
    """Queue the repository's ``push`` webhooks in the push's own transaction. The payload
    names the rows; the webhook body is rendered from them at the first delivery attempt."""
    payload: dict[str, Any] = {"push_id": push.id}
    if pipeline is not None:
        payload["pipeline_id"] = pipeline.id
    notify.enqueue_event(session, push.repo_id, notify.EVENT_PUSH, payload)


def enqueue_push_pipeline(session: Session, push: models.Push) -> models.Pipeline | None:
    """Queue the pipeline of ``push``: one pipeline, archiving every updated ref."""
    live = [u for u in push.ref_updates if not refs.is_zero(u.new)]
    if not live:
        return None
    first = live[0]
    pipeline = models.Pipeline(repo_id=push.repo_id, push_id=push.id, kind="push",
                               ref=first.ref, commit=first.new,
                               request=json.dumps({"push_id": push.id}))
    session.add(pipeline)
    session.flush()
    jobs.enqueue(session, "pipeline", {"pipeline_id": pipeline.id}, pipeline_id=pipeline.id)
    return pipeline


def pipeline_url(http_base_url: str, pipeline_id: int) -> str:
    return f"{http_base_url.rstrip('/')}/api/v1/pipelines/{pipeline_id}"


def parse_hook_updates(data: bytes) -> list[tuple[str, str, str]]:
    """The post-receive hook's ``{"updates": [[old, new, ref], ...]}`` (gitserver.hookrun), as
    whoever started git reads it from the hook socket; ValueError if malformed."""
    payload = json.loads(data.decode("utf-8"))
    rows = payload.get("updates") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise ValueError("malformed hook message")
    updates = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise ValueError("malformed ref update in hook message")
        updates.append((row[0], row[1], row[2]))
    return updates
