"""The durable record of each clone and adjust: its Pipeline row (visible in the pipelines
API, found by /cancel through the request's ``taskId``)."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.observe import metrics
from gitserver.pipelines import jobs
from gitserver.repour.command import redact


class RepourOp(enum.StrEnum):
    """The operations of Repour's and Reqour's faces, by the name their jobs, metrics and
    callbacks use. Clone and adjust run as a pipeline of the same kind."""

    CLONE = models.PipelineKind.CLONE.value
    ADJUST = models.PipelineKind.ADJUST.value
    INTERNAL_SCM = "internal-scm"
    EXTERNAL_TO_INTERNAL = "external-to-internal"
    CANCEL = "cancel"


# The Repour operations that run as a pipeline of their own.
OPERATIONS = (RepourOp.CLONE, RepourOp.ADJUST)


def create_pipeline(session: Session, *, kind: str, repo_id: int, spec: Mapping[str, Any],
                    status: str) -> models.Pipeline:
    """The Pipeline row of a clone/adjust (kind), visible in the pipelines API; ``task_id`` is
    the request's taskId, by which /cancel finds it."""
    ref = spec.get("ref") or ""
    pipeline = models.Pipeline(repo_id=repo_id, kind=kind, status=status, ref=str(ref)[:1024],
                               task_id=(spec.get("taskId") or None), request=json.dumps(redacted_spec(spec)),
                               started_at=utcnow() if status == models.RUNNING else None)
    session.add(pipeline)
    session.flush()
    return pipeline


def redacted_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The request as stored (and listed by the pipelines API): passwords in URLs hidden."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(dict(spec))


def finish_pipeline(session: Session, pipeline_id: int, status_code: int | None, body: Mapping[str, Any],
                    state: str | None = None) -> models.Pipeline | None:
    pipeline = session.get(models.Pipeline, pipeline_id)
    if pipeline is None:
        return None
    now = utcnow()
    pipeline.status = state or (models.SUCCEEDED if status_code == 200 else models.FAILED)
    pipeline.finished_at = now
    pipeline.result = json.dumps(body)
    if status_code is not None and status_code != 200:
        pipeline.error = str(body.get("desc") or body.get("error_type") or "failed")[:4000]
    if isinstance(body.get("tag"), str):
        pipeline.archive_tag = body["tag"]
    if isinstance(body.get("commit"), str):
        pipeline.commit = body["commit"]
    started = pipeline.started_at or pipeline.created_at
    if started is not None:
        metrics.pipeline_finished(pipeline.status, (now - started).total_seconds())
    session.flush()
    return pipeline


def cancel_task(session: Session, task_id: str,
                may_cancel: Callable[[models.Repository], bool]) -> int:
    """Cancel every unfinished clone/adjust whose request carried ``task_id`` and that the caller
    may cancel; the number cancelled. Whoever holds the job's lease kills the running command
    within about a second: a worker (callback mode) or the API process running a synchronous
    request (its :class:`InlineLease` polls for the cancel), on any replica."""
    pipelines = session.scalars(
        select(models.Pipeline).where(models.Pipeline.task_id == task_id,
                                      models.Pipeline.kind.in_(OPERATIONS),
                                      models.Pipeline.status.in_((models.QUEUED, models.RUNNING)))).all()
    count = 0
    for pipeline in pipelines:
        repo = session.get(models.Repository, pipeline.repo_id)
        if repo is None or not may_cancel(repo):
            continue
        has_job = session.scalar(select(models.Job.id).where(
            models.Job.pipeline_id == pipeline.id,
            models.Job.status.in_((models.QUEUED, models.RUNNING))).limit(1)) is not None
        if has_job:
            jobs.request_cancel(session, pipeline)
        else:
            pipeline.status = models.CANCELLED
            pipeline.finished_at = utcnow()
            pipeline.error = "cancelled"
        count += 1
    session.flush()
    return count
