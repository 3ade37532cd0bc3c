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

from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.lookup import visible_repo
from gitserver.api.paths import REPO, REPO_PARAM, TENANT_PARAM, repo_path
from gitserver.api.response import schemas
from gitserver.config import Config
from gitserver.db import models
from gitserver.git import maintain as git_maintain
from gitserver.jsonshape import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    NULLABLE_DATETIME,
    NULLABLE_STRING,
    NUMBER,
    STRING,
    Out,
    Shape,
    enum,
)
from gitserver.pipelines import maintain
from gitserver.policy import access

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


JOB = Shape("MaintenanceJob", {
    "id": Out(INTEGER), "status": Out(enum(models.STATES)), "created_at": Out(DATETIME),
    "run_after": Out(DATETIME, "when a worker may start it (queued jobs)"),
    "finished_at": Out(NULLABLE_DATETIME, "null until it succeeded, failed or was cancelled",
                       value=lambda job: job.updated_at if job.status in models.FINAL_STATES else None),
    "attempts": Out(INTEGER),
    # The job's last error line (git's, for a failed run); null when there is none.
    "error": Out(NULLABLE_STRING, "why it failed (git's last error line)", value=lambda job: job.last_error or None)})
SETTINGS = Shape("MaintenanceSettings", {
    "enabled": Out(BOOLEAN, "pushes queue jobs", attr="maintenance_enabled"),
    "max_packs": Out(INTEGER, "0: packs not looked at", given=True),
    "max_loose_objects": Out(INTEGER, "0: loose objects not looked at", given=True),
    "delay_seconds": Out(NUMBER, "from the push to the job's run", attr="maintenance_delay")})
MAINTENANCE_SHAPE = Shape("Maintenance", {
    "tenant": Out(STRING, given=True), "repo": Out(STRING, given=True),
    "packs": Out(INTEGER, "pack files in objects/pack"), "loose_objects": Out(INTEGER, attr="loose"),
    "bitmap": Out(BOOLEAN, "a reachability bitmap exists"),
    "commit_graph": Out(BOOLEAN, "a commit-graph exists"),
    "due": Out(BOOLEAN, "more packs or loose objects than the thresholds in settings allow: the next push "
                        "queues a job, when automatic maintenance is enabled and none is queued or running",
               given=True),
    "settings": Out(SETTINGS.schema(), given=True),
    "job": Out({"oneOf": [{"type": "null"}, {**JOB.schema(), "description": "the queued or running maintain "
                                              "job, else the newest finished one; null: none yet"}]}, given=True),
    "url": Out(STRING, "this resource: poll it to follow the job", given=True)})


def job_json(job: models.Job) -> dict[str, Any]:
    return JOB.render(job)


def maintenance_json(config: Config, tenant: str, repo: str, current: git_maintain.Stats,
                     job: models.Job | None) -> dict[str, Any]:
    limits = maintain.thresholds(config)
    return MAINTENANCE_SHAPE.render(
        current, tenant=tenant, repo=repo, due=git_maintain.needs_maintenance(current, limits),
        settings=SETTINGS.render(config, max_packs=limits.packs, max_loose_objects=limits.loose),
        job=None if job is None else job_json(job),
        url=f"{config.http_base_url.rstrip('/')}{maintenance_path(tenant, repo)}")


class Maintenance(Resource):
    # No options yet: the body may be absent or {}; anything else is refused by name, so a
    # client sending an option this server does not have learns it at once.
    FIELDS: ClassVar[Mapping[str, Field]] = {}

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


# The request body, documented from the Fields its handler validates with.
REQUEST_BODIES = {"MaintenanceRequest": Maintenance.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    **schemas(MAINTENANCE_SHAPE),
}

OPENAPI_PATHS: dict[str, Any] = {
    MAINTENANCE: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("getMaintenance", "Packs, loose objects, bitmap, commit-graph and the maintain job "
                     "(repository admins)", TAG, {200: ("The repository's maintenance", MAINTENANCE_SHAPE.ref())},
                     errors=(401, 403, 404)),
        "post": oa.op("runMaintenance", "Queue maintenance to run now, whatever the counts (repository "
                      "admins)", TAG,
                      {202: ("Queued; Location is the maintenance resource to poll", MAINTENANCE_SHAPE.ref()),
                       200: ("A maintain job was already queued or running: that one (a queued one is "
                             "made due now)", MAINTENANCE_SHAPE.ref())},
                      body=oa.json_body(oa.ref("MaintenanceRequest"), required=False)),
    },
}
