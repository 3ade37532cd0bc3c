"""Queueing a recorded push's pipeline and webhooks (the ledger records pushes:
gitserver.pipelines.ledger).

The caller owns the session and commits; the push's final state, the pipeline and the job
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
