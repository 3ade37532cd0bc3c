"""The ``repour`` job: a clone or adjust in callback mode (queued by :func:`enqueue_operation`,
run by a worker in :func:`run_repour_job`), or the take-over of a synchronous request whose API
process stopped (:func:`gitserver.repour.inline.take_over_inline`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import heartbeat, jobs
from gitserver.repour import bifrost
from gitserver.repour.callbacks import context_text, enqueue_callback, new_callback_id, request_context
from gitserver.repour.gitwork import Actor
from gitserver.repour.inline import INLINE_MODE, take_over_inline
from gitserver.repour.operations import RUNNERS, Operation, execute
from gitserver.repour.records import RepourOp, create_pipeline, finish_pipeline
from gitserver.repour.tokens import service_token_headers

log = logging.getLogger(__name__)

def enqueue_operation(session: Session, *, op_name: str, spec: Mapping[str, Any], actor: Actor,
                      repo_id: int, context: Mapping[str, str] | None = None,
                      face: str = "repour") -> tuple[str, models.Pipeline]:
    """Callback mode: the pipeline and its ``repour`` job, in the caller's transaction."""
    callback_id = new_callback_id()
    pipeline = create_pipeline(session, kind=op_name, repo_id=repo_id, spec=spec, status=models.QUEUED)
    # One attempt: an operation that failed has already told the caller so (callback).
    jobs.enqueue(session, jobs.JobKind.REPOUR, {"op": op_name, "spec": dict(spec), "callback_id": callback_id,
                                     "actor": actor.as_dict(), "max_attempts": 1,
                                     "context": dict(context or {}), "face": face},
                 pipeline_id=pipeline.id)
    return callback_id, pipeline


class LogCapture:
    """Passes an operation's output on to the pipeline log and keeps a copy (the alignment log
    Bifrost gets), up to :attr:`LIMIT` characters."""

    LIMIT = 16 * 1024 * 1024

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.size = 0

    def __call__(self, text: str) -> None:
        self.sink(text)
        if self.size < self.LIMIT:
            self.parts.append(text[: self.LIMIT - self.size])
            self.size += len(self.parts[-1])

    def text(self) -> str:
        return "".join(self.parts)


def run_repour_job(ctx: jobs.JobContext) -> None:
    """The ``repour`` job handler: run the operation, record it, queue the callback."""
    payload = ctx.payload
    if payload.get("mode") == INLINE_MODE:
        take_over_inline(ctx)
        return
    op_name = payload.get("op")
    if op_name not in RUNNERS or not isinstance(payload.get("spec"), dict) or ctx.pipeline_id is None:
        raise ValueError(f"malformed repour job payload (op {op_name!r})")
    runtime = ctx.runtime
    spec: dict[str, Any] = payload["spec"]
    callback_id = str(payload.get("callback_id") or new_callback_id())
    context = request_context(payload.get("context") or {})
    if context:
        log.info("repour %s (pipeline %s) for %s", op_name, ctx.pipeline_id, context_text(context))
        ctx.log(f"request context: {context_text(context)}\n")
    with transaction(runtime.sessions) as session:
        pipeline = session.get(models.Pipeline, ctx.pipeline_id)
        if pipeline is None or pipeline.status in models.FINAL_STATES:
            return  # cancelled before it ran (or already done by a previous holder of the lease)
        pipeline.status = models.RUNNING
        pipeline.started_at = pipeline.started_at or utcnow()

    def stop() -> None:
        ctx.check_cancelled()
        ctx.check_released()

    alignment_log = LogCapture(ctx.log)
    op = Operation(config=runtime.config, sessions=runtime.sessions, spec=spec,
                   actor=Actor.from_dict(payload.get("actor")), stop=stop, output=alignment_log,
                   pipeline_id=ctx.pipeline_id)
    beat = heartbeat.parse_config(spec.get("heartbeatConfig"))
    try:
        with heartbeat.Heartbeat(beat, allow_private=runtime.config.allow_private_networks):
            status, body = execute(op_name, op)
    except jobs.JobCancelled:
        # Like Repour: a cancelled task sends no callback (the canceller knows).
        with transaction(runtime.sessions) as session:
            finish_pipeline(session, ctx.pipeline_id, None, {}, state=models.CANCELLED)
        raise
    except jobs.JobReleased:
        with transaction(runtime.sessions) as session:
            pipeline = session.get(models.Pipeline, ctx.pipeline_id)
            if pipeline is not None:
                pipeline.status = models.QUEUED
        raise
    # Like Repour and Reqour: the alignment log reaches Bifrost before the result reaches PNC.
    bifrost_url = runtime.config.repour_bifrost_url
    if op_name == RepourOp.ADJUST and bifrost_url and not bifrost.upload_final_log(
            bifrost_url, alignment_log.text(), context, service_token_headers(runtime.config)):
        ctx.log("*** the alignment log could not be uploaded to Bifrost\n")
    with transaction(runtime.sessions) as session:
        finish_pipeline(session, ctx.pipeline_id, status, body)
        enqueue_callback(session, runtime.config, spec, status, body, callback_id, ctx.pipeline_id,
                         context=context, face=str(payload.get("face") or "repour"), op_name=op_name)
