"""The reconcilers that keep every push's pipeline alive, run by the worker's monitor:
:func:`reconcile` (a push recorded without a pipeline gets one) and
:func:`repair_orphaned_pipelines` (a pipeline whose job ended without a verdict is failed)."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.git import refs
from gitserver.push import ledger
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

# A push this old without a pipeline was lost (push and pipeline commit together, so a
# younger one may just not be visible yet on a replica's snapshot).
RECONCILE_MIN_AGE = dt.timedelta(seconds=5)
RECONCILE_BATCH = 100
# Only the newest pushes are looked at (a primary-key range, so each pass stays cheap however
# long the audit log grows); a lost pipeline is found within seconds, long before it leaves it.
RECONCILE_WINDOW = 50_000
# A pipeline whose job ended this long ago without the pipeline being finished was orphaned.
ORPHAN_MIN_AGE = dt.timedelta(seconds=60)

def reconcile(runtime: Runtime) -> int:
    """Queue a pipeline for each push recorded (done or recovered) without one; returns how
    many were queued. Never for a pending push: its hook, or the ledger's reconciler once its
    grace is over, settles it and queues its pipeline in the same transaction."""
    cutoff = utcnow() - RECONCILE_MIN_AGE
    with transaction(runtime.sessions) as session:
        newest = session.scalar(select(func.max(models.Push.id))) or 0
        push_ids = list(session.scalars(
            select(models.Push.id)
            .outerjoin(models.Pipeline, models.Pipeline.push_id == models.Push.id)
            .where(models.Push.id > newest - RECONCILE_WINDOW)
            .where(models.Pipeline.id.is_(None), models.Push.created_at < cutoff,
                   models.Push.state.in_(models.LEDGER_STATES))
            .where(models.Push.id.in_(select(models.RefUpdate.push_id).where(
                ~models.RefUpdate.new.in_((refs.ZERO_OID, refs.ZERO_OID_SHA256)))))
            .order_by(models.Push.id).limit(RECONCILE_BATCH)))
    queued = 0
    for push_id in push_ids:
        try:
            with transaction(runtime.sessions) as session:
                push = session.get(models.Push, push_id)
                if push is not None and ledger.enqueue_push_pipeline(session, push) is not None:
                    queued += 1
                    log.warning("push %s had no pipeline; queued one", push_id)
        except IntegrityError:
            pass  # another replica's reconciler (or the push itself) got there first
    return queued


def repair_orphaned_pipelines(runtime: Runtime) -> int:
    """Fail push pipelines left unfinished although their job is over (the handler could not
    record the verdict, e.g. the database went away at that moment); returns how many.

    Without this such a pipeline would show ``running`` forever: its job is final, so no
    worker will ever pick it up again.
    """
    cutoff = utcnow() - ORPHAN_MIN_AGE
    live_job = (select(models.Job.id)
                .where(models.Job.pipeline_id == models.Pipeline.id,
                       or_(models.Job.status.in_((models.QUEUED, models.RUNNING)),
                           models.Job.updated_at >= cutoff)))
    any_job = select(models.Job.id).where(models.Job.pipeline_id == models.Pipeline.id)
    with transaction(runtime.sessions) as session:
        orphans = session.scalars(
            select(models.Pipeline)
            .where(models.Pipeline.kind == models.PipelineKind.PUSH,
                   models.Pipeline.status.in_((models.QUEUED, models.RUNNING)),
                   any_job.exists(), ~live_job.exists())
            .limit(RECONCILE_BATCH)).all()
        now = utcnow()
        for pipeline in orphans:
            log.warning("pipeline %s was left %s after its job ended; marked failed",
                        pipeline.id, pipeline.status)
            pipeline.status = models.FAILED
            pipeline.error = "the worker running this pipeline could not record its result"
            pipeline.finished_at = now
        return len(orphans)
