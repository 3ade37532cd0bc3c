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

from gitserver import shapes
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.context import ApiContext, Resource
from gitserver.api.lookup import visible_repo
from gitserver.api.paging import OPENAPI_PARAMETERS, page
from gitserver.api.paths import API, ID_CONVERTER, ID_SCHEMA, REPO, REPO_PARAM, TENANT_PARAM
from gitserver.api.response import schemas
from gitserver.db import models
from gitserver.jsonshape import BOOLEAN, DATETIME, INTEGER, NULLABLE_INTEGER, STRING, Out, Shape, each
from gitserver.pipelines import jobs, logstore
from gitserver.policy import access
from gitserver.policy.errors import Gone, InvalidInput, NotFound

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

PIPELINE_DETAIL = shapes.PIPELINE.extend("PipelineDetail", {
    "steps": each(shapes.STEP, "steps"), "cancel_requested": Out(BOOLEAN, given=True)})
ARCHIVE = Shape("Archive", {
    "id": Out(INTEGER), "tag": Out(STRING, "clone it: git clone --depth 1 --branch <tag>"),
    "tree_id": Out(STRING), "commit_id": Out(STRING), "source_commit": Out(STRING), "source_ref": Out(STRING),
    "pipeline_id": Out(NULLABLE_INTEGER), "created_at": Out(DATETIME)})


def pipeline_detail_json(pipeline: models.Pipeline, repo: models.Repository, base_url: str,
                         cancel_requested: bool) -> dict[str, Any]:
    """A pipeline with its steps, as one pipeline is shown."""
    return PIPELINE_DETAIL.render(pipeline, **shapes.pipeline_given(pipeline, repo, base_url),
                                  cancel_requested=cancel_requested)


def archive_json(archive: models.Archive) -> dict[str, Any]:
    return ARCHIVE.render(archive)


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


class RepoPipelines(Resource):
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
                              serialize=lambda p: shapes.pipeline_json(p, row, base))


class RepoArchives(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            stmt = select(models.Archive).where(models.Archive.repo_id == row.id)
            resp.media = page(session, stmt, models.Archive.id, req, descending=True,
                              serialize=archive_json)


class Pipeline(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            pipeline, repo = visible_pipeline(session, principal, pipeline_id)
            resp.media = pipeline_detail_json(pipeline, repo, self.ctx.config.http_base_url,
                                              _cancel_requested(session, pipeline.id))


class PipelineLog(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        offset = _parse_offset(req.get_param("offset"))
        with authenticated(self.ctx.runtime.sessions, req, optional=True) as (session, principal):
            pipeline, _repo = visible_pipeline(session, principal, pipeline_id)
            if pipeline.log_pruned_at is not None:
                raise Gone(f"the log of pipeline {pipeline.id} was deleted on "
                           f"{pipeline.log_pruned_at.isoformat()} (setting {logstore.RETENTION_SETTING}); "
                           "the pipeline and its steps are kept")
            data, next_offset = jobs.read_log(session, pipeline.id, offset, MAX_LOG_RESPONSE)
            status = pipeline.status
        resp.content_type = "text/plain; charset=utf-8"
        resp.set_header(HEADER_OFFSET, str(next_offset))
        resp.set_header(HEADER_STATUS, status)
        resp.data = data


class PipelineCancel(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, pipeline_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            pipeline, repo = visible_pipeline(session, principal, pipeline_id, need=access.WRITE)
            accepted = jobs.request_cancel(session, pipeline)
            resp.media = pipeline_detail_json(pipeline, repo, self.ctx.config.http_base_url,
                                              accepted or _cancel_requested(session, pipeline.id))
        # 202: a pipeline that a worker holds stops once the worker sees the request (about
        # a second); 200: it is final now (cancelled here, or it had already finished).
        resp.status = falcon.HTTP_200 if pipeline.status in models.FINAL_STATES else falcon.HTTP_202


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((REPO_PIPELINES, RepoPipelines), (REPO_ARCHIVES, RepoArchives), (PIPELINE, Pipeline),
                       (PIPELINE_LOG, PipelineLog), (PIPELINE_CANCEL, PipelineCancel)))


_PIPELINE_ID = oa.path_param("pipeline_id", "pipeline id", ID_SCHEMA)

OPENAPI_SCHEMAS: dict[str, Any] = schemas(PIPELINE_DETAIL, shapes.STEP, listed=(shapes.PIPELINE, ARCHIVE))

_LOG_RESPONSE = {
    "description": "Log bytes from `offset` (at most 1 MiB; empty when nothing new). Follow a "
                   "running pipeline by asking again with `offset` = `X-Log-Offset` until "
                   "`X-Pipeline-Status` is final and the body is empty.",
    "headers": {
        HEADER_OFFSET: {"description": "the offset to ask for next", "schema": {"type": "integer"}},
        HEADER_STATUS: {"description": "the pipeline's status", "schema": shapes.STATUS},
    },
    "content": {"text/plain": {"schema": {"type": "string"}}},
}

OPENAPI_PATHS: dict[str, Any] = {
    REPO_PIPELINES: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("listPipelines", "Pipelines of a repository, newest first", TAG,
                     {200: ("A page of pipelines", oa.ref("PipelineList"))}, errors=(400, 401, 403, 404),
                     parameters=[*OPENAPI_PARAMETERS,
                                 oa.query_param("status", "only pipelines in this state", shapes.STATUS),
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
                     {200: ("The pipeline", PIPELINE_DETAIL.ref())}, errors=(401, 403, 404), public=True),
    },
    oa.openapi_path(PIPELINE_LOG): {
        "parameters": [_PIPELINE_ID],
        "get": oa.op("getPipelineLog", "The pipeline's log from a byte offset (text/plain)", TAG,
                     {200: _LOG_RESPONSE}, errors=(400, 401, 403, 404, 410), public=True,
                     parameters=[oa.query_param("offset", "byte offset to start from (default 0)",
                                                {"type": "integer", "minimum": 0})]),
    },
    oa.openapi_path(PIPELINE_CANCEL): {
        "parameters": [_PIPELINE_ID],
        "post": oa.op("cancelPipeline", "Cancel a pipeline (write permission)", TAG,
                      {200: ("Final: cancelled now (no worker held it), or it had already "
                             "finished and nothing changed", PIPELINE_DETAIL.ref()),
                       202: ("Cancel requested: the worker running it kills the running step within "
                             "about a second", PIPELINE_DETAIL.ref())},
                      errors=(401, 403, 404)),
    },
}
