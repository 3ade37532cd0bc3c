"""Pipelines and archives: list, inspect, follow the log, cancel.

Reading needs read permission on the pipeline's repository (anonymous callers may read public
repositories); a pipeline of a repository the caller cannot read answers 404 exactly like a
missing one. Cancelling needs write permission. The log is served as raw bytes so a follower
can ask for "everything after offset N" again and again (``X-Log-Offset`` is the next N).
"""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from gitserver import access
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_repo
from gitserver.api.paging import OPENAPI_PARAMETERS, list_schema, page
from gitserver.api.resources.repos import REPO, REPO_PARAM
from gitserver.api.resources.tenants import API, TENANT_PARAM
from gitserver.api.resources.users import DATETIME, ID_CONVERTER, ID_SCHEMA, NULLABLE_DATETIME
from gitserver.db import models
from gitserver.errors import InvalidInput, NotFound
from gitserver.pipelines import jobs
from gitserver.shapes import pipeline_json, step_json

REPO_PIPELINES = f"{REPO}/pipelines"
REPO_ARCHIVES = f"{REPO}/archives"
PIPELINE = f"{API}/pipelines/{{pipeline_id:{ID_CONVERTER}}}"
PIPELINE_LOG = f"{PIPELINE}/log"
PIPELINE_CANCEL = f"{PIPELINE}/cancel"
TAG = "pipelines"
# Largest piece of log one request returns; a follower asks again from X-Log-Offset.
MAX_LOG_RESPONSE = 1 << 20
HEADER_OFFSET = "X-Log-Offset"
HEADER_STATUS = "X-Pipeline-Status"
# Longest Repour ``taskId`` accepted by /clone and /adjust (the column's width).
MAX_TASK_ID = 200
# What Pipeline.kind holds: a push's pipeline, the Repour operation that made it, or the
# tenant's create template run for a new repository (gitserver.pipelines.oncreate).
PIPELINE_KINDS = ("push", "clone", "adjust", "create")


def archive_json(archive: models.Archive) -> dict[str, Any]:
    return {"id": archive.id, "tag": archive.tag, "tree_id": archive.tree_id,
            "commit_id": archive.commit_id, "source_commit": archive.source_commit,
            "source_ref": archive.source_ref, "pipeline_id": archive.pipeline_id,
            "created_at": archive.created_at}


def _cancel_requested(session: Session, pipeline_id: int) -> bool:
    return bool(session.scalar(select(exists().where(
        models.Job.pipeline_id == pipeline_id, models.Job.cancel_requested.is_(True)))))


def visible_pipeline(session: Session, principal: access.Principal, pipeline_id: int,
                     need: str = access.READ) -> tuple[models.Pipeline, models.Repository]:
    """The pipeline and its repository; 404 (like a missing one) unless the principal can
    read the repository, 403 when it can read but lacks ``need``."""
    pipeline = session.get(models.Pipeline, pipeline_id)
    repo = session.get(models.Repository, pipeline.repo_id) if pipeline is not None else None
    missing = NotFound(f"pipeline {pipeline_id} not found")
    if pipeline is None or repo is None:
        raise missing
    try:
        access.require(session, principal, repo, need)
    except access.RepoHidden:
        raise missing from None
    return pipeline, repo


def _parse_offset(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 15:
        raise InvalidInput("offset must be a non-negative integer (a byte offset into the log)",
                           field="offset")
    return int(value)


def _parse_task_id(value: str) -> str:
    # The bounds /clone and /adjust enforce on ``taskId``: a value outside them cannot match.
    if not value or len(value) > MAX_TASK_ID or "\x00" in value:
        raise InvalidInput(f"task_id must be 1 to {MAX_TASK_ID} characters without NUL (a Repour taskId)",
                           field="task_id")
    return value


class RepoPipelines:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            stmt = select(models.Pipeline).where(models.Pipeline.repo_id == row.id)
            status = req.get_param("status")
            if status:
                if status not in models.STATES:
                    raise InvalidInput(f"status must be one of {', '.join(models.STATES)}", field="status")
                stmt = stmt.where(models.Pipeline.status == status)
            task_id = req.get_param("task_id")
            if task_id is not None:
                stmt = stmt.where(models.Pipeline.task_id == _parse_task_id(task_id))
            base = self.ctx.config.http_base_url
            resp.media = page(session, stmt, models.Pipeline.id, req, descending=True,
                              serialize=lambda p: pipeline_json(p, row, base))


class RepoArchives:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            stmt = select(models.Archive).where(models.Archive.repo_id == row.id)
            resp.media = page(session, stmt, models.Archive.id, req, descending=True,
                              serialize=archive_json)


class Pipeline:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            pipeline, repo = visible_pipeline(session, principal, pipeline_id)
            body = pipeline_json(pipeline, repo, self.ctx.config.http_base_url)
            body["steps"] = [step_json(s) for s in pipeline.steps]
            body["cancel_requested"] = _cancel_requested(session, pipeline.id)
            resp.media = body


class PipelineLog:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        offset = _parse_offset(req.get_param("offset"))
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            pipeline, _repo = visible_pipeline(session, principal, pipeline_id)
            data, next_offset = jobs.read_log(session, pipeline.id, offset, MAX_LOG_RESPONSE)
            status = pipeline.status
        resp.content_type = "text/plain; charset=utf-8"
        resp.set_header(HEADER_OFFSET, str(next_offset))
        resp.set_header(HEADER_STATUS, status)
        resp.data = data


class PipelineCancel:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            pipeline, repo = visible_pipeline(session, principal, pipeline_id, need=access.WRITE)
            accepted = jobs.request_cancel(session, pipeline)
            body = pipeline_json(pipeline, repo, self.ctx.config.http_base_url)
            body["steps"] = [step_json(s) for s in pipeline.steps]
            body["cancel_requested"] = accepted or _cancel_requested(session, pipeline.id)
            resp.media = body
        # 202: a pipeline that a worker holds stops once the worker sees the request (about
        # a second); 200: it is final now (cancelled here, or it had already finished).
        resp.status = falcon.HTTP_200 if pipeline.status in models.FINAL_STATES else falcon.HTTP_202


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(REPO_PIPELINES, RepoPipelines(ctx))
    app.add_route(REPO_ARCHIVES, RepoArchives(ctx))
    app.add_route(PIPELINE, Pipeline(ctx))
    app.add_route(PIPELINE_LOG, PipelineLog(ctx))
    app.add_route(PIPELINE_CANCEL, PipelineCancel(ctx))


_STATUS = {"type": "string", "enum": list(models.STATES)}
_NULLABLE_SECONDS = {"type": ["number", "null"]}
_PIPELINE_ID = oa.path_param("pipeline_id", "pipeline id", ID_SCHEMA)
_PIPELINE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "integer"}, "tenant": {"type": "string"}, "repo": {"type": "string"},
    "kind": {"type": "string", "enum": list(PIPELINE_KINDS),
             "description": "push (archive/build of a push), or clone/adjust (a Repour request)"},
    "status": _STATUS,
    "ref": {"type": "string", "description": "the (first) pushed ref"},
    "commit": {"type": "string", "description": "the pushed commit"},
    "archive_tag": {"type": ["string", "null"], "description": "repour-<archive commit id>, once archived"},
    "error": {"type": "string"}, "push_id": {"type": ["integer", "null"]},
    "task_id": {"type": ["string", "null"],
                "description": "the taskId of the Repour /clone or /adjust request (null otherwise)"},
    "created_at": DATETIME, "started_at": NULLABLE_DATETIME, "finished_at": NULLABLE_DATETIME,
    "queued_seconds": _NULLABLE_SECONDS, "duration_seconds": _NULLABLE_SECONDS,
    "url": {"type": "string"}, "log_url": {"type": "string"},
}
_PIPELINE_REQUIRED = list(_PIPELINE_PROPERTIES)

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Pipeline": {"type": "object", "required": _PIPELINE_REQUIRED, "properties": _PIPELINE_PROPERTIES},
    "PipelineList": list_schema("#/components/schemas/Pipeline"),
    "Step": {
        "type": "object",
        "required": ["position", "name", "status", "exit_code", "message", "started_at", "finished_at",
                     "duration_seconds"],
        "properties": {"position": {"type": "integer"}, "name": {"type": "string"}, "status": _STATUS,
                       "exit_code": {"type": ["integer", "null"]}, "message": {"type": "string"},
                       "started_at": NULLABLE_DATETIME, "finished_at": NULLABLE_DATETIME,
                       "duration_seconds": _NULLABLE_SECONDS},
    },
    "PipelineDetail": {
        "type": "object", "required": [*_PIPELINE_REQUIRED, "steps", "cancel_requested"],
        "properties": {**_PIPELINE_PROPERTIES,
                       "steps": {"type": "array", "items": oa.ref("Step")},
                       "cancel_requested": {"type": "boolean"}},
    },
    "Archive": {
        "type": "object",
        "required": ["id", "tag", "tree_id", "commit_id", "source_commit", "source_ref", "pipeline_id",
                     "created_at"],
        "properties": {"id": {"type": "integer"},
                       "tag": {"type": "string", "description": "clone it: git clone --depth 1 --branch <tag>"},
                       "tree_id": {"type": "string"}, "commit_id": {"type": "string"},
                       "source_commit": {"type": "string"}, "source_ref": {"type": "string"},
                       "pipeline_id": {"type": ["integer", "null"]}, "created_at": DATETIME},
    },
    "ArchiveList": list_schema("#/components/schemas/Archive"),
}

_LOG_RESPONSE = {
    "description": "Log bytes from `offset` (at most 1 MiB; empty when nothing new). Follow a "
                   "running pipeline by asking again with `offset` = `X-Log-Offset` until "
                   "`X-Pipeline-Status` is final and the body is empty.",
    "headers": {
        HEADER_OFFSET: {"description": "the offset to ask for next", "schema": {"type": "integer"}},
        HEADER_STATUS: {"description": "the pipeline's status", "schema": _STATUS},
    },
    "content": {"text/plain": {"schema": {"type": "string"}}},
}

OPENAPI_PATHS: dict[str, Any] = {
    REPO_PIPELINES: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("listPipelines", "Pipelines of a repository, newest first", TAG,
                     {200: ("A page of pipelines", oa.ref("PipelineList"))}, errors=(400, 401, 403, 404),
                     parameters=[*OPENAPI_PARAMETERS,
                                 oa.query_param("status", "only pipelines in this state", _STATUS),
                                 oa.query_param("task_id", "only the pipelines of Repour requests with this taskId",
                                                {"type": "string", "minLength": 1, "maxLength": MAX_TASK_ID,
                                                 "pattern": "^[^\\x00]+$"})],
                     public=True),
    },
    REPO_ARCHIVES: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("listArchives", "Archive tags of a repository (one per tree), newest first", TAG,
                     {200: ("A page of archives", oa.ref("ArchiveList"))}, errors=(400, 401, 403, 404),
                     parameters=OPENAPI_PARAMETERS, public=True),
    },
    oa.openapi_path(PIPELINE): {
        "parameters": [_PIPELINE_ID],
        "get": oa.op("getPipeline", "One pipeline with its steps", TAG,
                     {200: ("The pipeline", oa.ref("PipelineDetail"))}, errors=(401, 403, 404), public=True),
    },
    oa.openapi_path(PIPELINE_LOG): {
        "parameters": [_PIPELINE_ID],
        "get": oa.op("getPipelineLog", "The pipeline's log from a byte offset (text/plain)", TAG,
                     {200: _LOG_RESPONSE}, errors=(400, 401, 403, 404), public=True,
                     parameters=[oa.query_param("offset", "byte offset to start from (default 0)",
                                                {"type": "integer", "minimum": 0})]),
    },
    oa.openapi_path(PIPELINE_CANCEL): {
        "parameters": [_PIPELINE_ID],
        "post": oa.op("cancelPipeline", "Cancel a pipeline (write permission)", TAG,
                      {200: ("Final: cancelled now (no worker held it), or it had already "
                             "finished and nothing changed", oa.ref("PipelineDetail")),
                       202: ("Cancel requested: the worker running it kills the running step within "
                             "about a second", oa.ref("PipelineDetail"))},
                      errors=(401, 403, 404)),
    },
}
