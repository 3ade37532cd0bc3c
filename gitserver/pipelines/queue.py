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


def push_payload(session: Session, push: models.Push, pipeline: models.Pipeline | None) -> dict[str, Any]:
    """The ``push`` event's body (webhooks)."""
    repo = session.get(models.Repository, push.repo_id)
    user = session.get(models.User, push.user_id) if push.user_id is not None else None
    return {
        "event": "push",
        "repository": {"tenant": repo.tenant.name if repo else "", "name": repo.name if repo else "",
                       "full_name": repo.full_name if repo else ""},
        "push": {"id": push.id, "user": user.name if user else None, "protocol": push.protocol,
                 "created_at": push.created_at.isoformat() if push.created_at else None,
                 "ref_updates": [{"ref": u.ref, "old": u.old, "new": u.new} for u in push.ref_updates]},
        "pipeline": {"id": pipeline.id} if pipeline is not None else None,
    }


def notify_push(session: Session, push: models.Push, pipeline: models.Pipeline | None) -> None:
    """Queue the repository's ``push`` webhooks in the push's own transaction."""
    try:
        from gitserver.pipelines import notify
    except ImportError:  # webhooks not in this build yet
        return
    notify.enqueue_event(session, push.repo_id, "push", push_payload(session, push, pipeline))


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
    session.add(models.Job(kind="pipeline", pipeline_id=pipeline.id,
                           payload=json.dumps({"pipeline_id": pipeline.id})))
    session.flush()
    return pipeline


def pipeline_url(http_base_url: str, pipeline_id: int) -> str:
    return f"{http_base_url.rstrip('/')}/api/v1/pipelines/{pipeline_id}"
