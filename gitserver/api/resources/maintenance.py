"""A repository's maintenance (docs/maintenance.md) through the API: what its object store
looks like, and a ``maintain`` job run now on request.

GET reads the counts from disk the way a push's pipeline job does (two directory listings, no
git process), so it is cheap to poll; it also shows the repository's newest ``maintain`` job.
POST queues a job for a worker to run now, whatever the counts and whether automatic
maintenance is enabled (like ``gitserver maintain``), through the same one-at-a-time rule as
pushes (:func:`gitserver.pipelines.maintain.queue_now`): a job already queued or running is
answered instead of a second one. Both need the admin permission on the repository, as
changing its settings does (:func:`lookup.visible_repo` with ``need=ADMIN``): readers and
writers get 403, whoever cannot read it 404 like a missing repository.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver import access
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_repo
from gitserver.api.resources.repos import REPO, REPO_PARAM, repo_path
from gitserver.api.resources.tenants import TENANT_PARAM
from gitserver.api.resources.users import DATETIME, NULLABLE_DATETIME
from gitserver.config import Config
from gitserver.db import models
from gitserver.git import maintain as git_maintain
from gitserver.pipelines import maintain

MAINTENANCE = f"{REPO}/maintenance"
TAG = "repositories"


def maintenance_path(tenant: str, repo: str) -> str:
    return f"{repo_path(tenant, repo)}/maintenance"


def latest_job(session: Session, repo_id: int) -> models.Job | None:
    """The job to show: the repository's newest, which is the queued or running one when there
    is one (a job is queued only while none is), else the newest that finished (None when the
    repository was never maintained by a worker)."""
    return session.scalar(
        select(models.Job).where(models.Job.kind == maintain.KIND,
                                 models.Job.payload == maintain.payload_of(repo_id))
        .order_by(models.Job.id.desc()).limit(1))


def job_json(job: models.Job) -> dict[str, Any]:
    finished = job.status in models.FINAL_STATES
    return {"id": job.id, "status": job.status, "created_at": job.created_at, "run_after": job.run_after,
            "finished_at": job.updated_at if finished else None, "attempts": job.attempts,
            # The job's last error line (git's, for a failed run); null when there is none.
            "error": job.last_error or None}


def maintenance_json(config: Config, tenant: str, repo: str, current: git_maintain.Stats,
                     job: models.Job | None) -> dict[str, Any]:
    limits = maintain.thresholds(config)
    return {"tenant": tenant, "repo": repo, "packs": current.packs, "loose_objects": current.loose,
            "bitmap": current.bitmap, "commit_graph": current.commit_graph,
            "due": git_maintain.needs_maintenance(current, limits),
            "settings": {"enabled": config.maintenance_enabled, "max_packs": limits.packs,
                         "max_loose_objects": limits.loose, "delay_seconds": config.maintenance_delay},
            "job": None if job is None else job_json(job),
            "url": f"{config.http_base_url.rstrip('/')}{maintenance_path(tenant, repo)}"}


class Maintenance:
    # No options yet: the body may be absent or {}; anything else is refused by name, so a
    # client sending an option this server does not have learns it at once.
    FIELDS: ClassVar[Mapping[str, Field]] = {}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _answer(self, row: models.Repository, job: models.Job | None) -> dict[str, Any]:
        tenant = row.tenant.name
        current = git_maintain.stats(self.ctx.runtime.store.path(tenant, row.name))
        return maintenance_json(self.ctx.config, tenant, row.name, current, job)

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            resp.media = self._answer(row, latest_job(session, row.id))

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            read_json(req, self.FIELDS, allow_empty=True)
            job, created = maintain.queue_now(session, row.id)
            resp.media = self._answer(row, job)
            resp.location = maintenance_path(row.tenant.name, row.name)
        resp.status = falcon.HTTP_202 if created else falcon.HTTP_200


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(MAINTENANCE, Maintenance(ctx))


_JOB = {
    "type": "object",
    "required": ["id", "status", "created_at", "run_after", "finished_at", "attempts", "error"],
    "properties": {
        "id": {"type": "integer"},
        "status": {"type": "string", "enum": list(models.STATES)},
        "created_at": DATETIME,
        "run_after": {**DATETIME, "description": "when a worker may start it (queued jobs)"},
        "finished_at": {**NULLABLE_DATETIME, "description": "null until it succeeded, failed or was cancelled"},
        "attempts": {"type": "integer"},
        "error": {"type": ["string", "null"], "description": "why it failed (git's last error line)"},
    },
}

# The request body, documented from the Fields its handler validates with.
REQUEST_BODIES = {"MaintenanceRequest": Maintenance.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    "Maintenance": {
        "type": "object",
        "required": ["tenant", "repo", "packs", "loose_objects", "bitmap", "commit_graph", "due",
                     "settings", "job", "url"],
        "properties": {
            "tenant": {"type": "string"}, "repo": {"type": "string"},
            "packs": {"type": "integer", "description": "pack files in objects/pack"},
            "loose_objects": {"type": "integer"},
            "bitmap": {"type": "boolean", "description": "a reachability bitmap exists"},
            "commit_graph": {"type": "boolean", "description": "a commit-graph exists"},
            "due": {"type": "boolean",
                    "description": "more packs or loose objects than the thresholds in settings allow: "
                                   "the next push queues a job, when automatic maintenance is enabled "
                                   "and none is queued or running"},
            "settings": {
                "type": "object",
                "required": ["enabled", "max_packs", "max_loose_objects", "delay_seconds"],
                "properties": {"enabled": {"type": "boolean", "description": "pushes queue jobs"},
                               "max_packs": {"type": "integer", "description": "0: packs not looked at"},
                               "max_loose_objects": {"type": "integer",
                                                     "description": "0: loose objects not looked at"},
                               "delay_seconds": {"type": "number",
                                                 "description": "from the push to the job's run"}},
            },
            "job": {"oneOf": [{"type": "null"}, {**_JOB, "description": "the queued or running maintain "
                                                 "job, else the newest finished one; null: none yet"}]},
            "url": {"type": "string", "description": "this resource: poll it to follow the job"},
        },
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    MAINTENANCE: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("getMaintenance", "Packs, loose objects, bitmap, commit-graph and the maintain job "
                     "(repository admins)", TAG, {200: ("The repository's maintenance", oa.ref("Maintenance"))},
                     errors=(401, 403, 404)),
        "post": oa.op("runMaintenance", "Queue maintenance to run now, whatever the counts (repository "
                      "admins)", TAG,
                      {202: ("Queued; Location is the maintenance resource to poll", oa.ref("Maintenance")),
                       200: ("A maintain job was already queued or running: that one (a queued one is "
                             "made due now)", oa.ref("Maintenance"))},
                      body=oa.json_body(oa.ref("MaintenanceRequest"), required=False)),
    },
}
