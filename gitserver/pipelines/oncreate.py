"""What follows the creation of a repository, whichever front created it (API, CLI, Repour's
``/internal-scm``: all go through :func:`gitserver.admin.create_repo`, which calls
:func:`repository_created` in the creating transaction).

* The tenant's webhooks get a ``repository`` event with action ``created``.
* When the tenant names a *create template* (``create_template``, a repository of the same
  tenant), a pipeline of kind ``create`` is queued for the new repository. A worker runs the
  steps of the template's ``.gitserver/pipeline.toml`` (at the tip of the template's default
  branch) in a clone of the template, with the new repository's coordinates in ``GITSERVER_*``
  variables: what Solum needs to provision an application when a repository appears.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import pygit2
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git.archive import read_blob
from gitserver.git.store import DEFAULT_BRANCH
from gitserver.pipelines import build, jobs, notify
from gitserver.pipelines.archive import find_archive

log = logging.getLogger(__name__)

KIND_CREATE = "create"
EVENT_ENV = {"GITSERVER_EVENT": notify.EVENT_REPOSITORY, "GITSERVER_ACTION": notify.REPOSITORY_CREATED}


def repository_created(session: Session, repo: models.Repository) -> models.Pipeline | None:
    """Queue what a new repository sets off (caller's transaction); the create pipeline, if any."""
    notify.notify_repository(session, repo, notify.REPOSITORY_CREATED)
    return enqueue_create_pipeline(session, repo)


def enqueue_create_pipeline(session: Session, repo: models.Repository) -> models.Pipeline | None:
    tenant = session.get(models.Tenant, repo.tenant_id)
    template = tenant.create_template if tenant is not None else ""
    if not template or template == repo.name:  # the template itself sets nothing off
        return None
    pipeline = models.Pipeline(repo_id=repo.id, kind=KIND_CREATE,
                               request=json.dumps({"template": template}))
    session.add(pipeline)
    session.flush()
    jobs.enqueue(session, "pipeline", {"pipeline_id": pipeline.id}, pipeline_id=pipeline.id)
    log.info("repository %s created: create pipeline %s queued (template %s)", repo.full_name,
             pipeline.id, template)
    return pipeline


class PipelineRun(Protocol):
    """What a create pipeline uses of the worker's PipelineRun (its rows, its log, its builds)."""

    cfg: Config
    ctx: jobs.JobContext
    sessions: sessionmaker[Session]
    pipeline_id: int

    def _step_start(self, name: str) -> int: ...

    def _step_end(self, step_id: int, status: str, exit_code: int | None, message: str, t0: float) -> None: ...

    def _run_steps(self, coords: build.Coordinates, path: Path, clone_ref: str,
                   specs: list[build.StepSpec], prefix: str) -> None: ...


def run_create(run: PipelineRun, repo: models.Repository, request: dict[str, Any]) -> None:
    """Run a ``create`` pipeline for the new repository ``repo``."""
    from gitserver.pipelines.worker import PipelineFailed

    cfg = run.cfg
    name = request.get("template")
    step = run._step_start("template")
    t0 = time.monotonic()
    template = _template(run, repo, name)
    if template is None:
        message = f"create template {name!r} is not a repository of tenant {repo.tenant.name}"
        run._step_end(step, models.FAILED, None, message, t0)
        raise PipelineFailed(message)
    path = run.ctx.runtime.store.path(repo.tenant.name, template.name)
    git = pygit2.Repository(str(path))
    branch = git.references.get(f"refs/heads/{DEFAULT_BRANCH}")
    if branch is None:
        run.ctx.log(f"template {template.full_name} has no {DEFAULT_BRANCH} branch: nothing to run\n")
        run._step_end(step, models.SUCCEEDED, 0, "template has no commits", t0)
        return
    commit = branch.peel(pygit2.Commit)
    data = read_blob(git, str(commit.tree_id), build.PIPELINE_FILE, build.MAX_PIPELINE_FILE)
    if data is None:
        run.ctx.log(f"no {build.PIPELINE_FILE} in template {template.full_name}: nothing to run\n")
        run._step_end(step, models.SUCCEEDED, 0, "no pipeline file", t0)
        return
    try:
        spec = build.parse_pipeline(data.decode("utf-8"))
    except (ValueError, build.PipelineFileError) as exc:
        message = f"template {template.full_name}: {exc}"
        run._step_end(step, models.FAILED, None, message[:500], t0)
        raise PipelineFailed(message) from exc
    with transaction(run.sessions) as session:
        archive = find_archive(session, template.id, str(commit.tree_id))
        pipeline = session.get(models.Pipeline, run.pipeline_id)
        assert pipeline is not None
        pipeline.ref = f"refs/heads/{DEFAULT_BRANCH}"
        pipeline.commit = str(commit.id)
    # The archive tag of the template's tree is immutable; before its archive exists the
    # branch is cloned (it is the same commit unless the template moved meanwhile).
    clone_ref = archive.tag if archive is not None else DEFAULT_BRANCH
    run.ctx.log(f"template {template.full_name} at {str(commit.id)[:12]} ({clone_ref}): "
                f"{len(spec.steps)} step(s) for {repo.full_name}\n")
    run._step_end(step, models.SUCCEEDED, 0, f"{len(spec.steps)} step(s)", t0)
    coords = build.Coordinates(
        repo=repo.full_name, ref="", commit="", tag="",
        readonly_url=f"{cfg.http_base_url}/git/{repo.full_name}.git",
        extra=(*EVENT_ENV.items(),
               ("GITSERVER_SSH_URL", f"{cfg.ssh_base_url}/{repo.full_name}.git"),
               ("GITSERVER_TEMPLATE", template.full_name),
               ("GITSERVER_TEMPLATE_COMMIT", str(commit.id))))
    run._run_steps(coords, path, clone_ref, spec.steps, "")


def _template(run: PipelineRun, repo: models.Repository, name: object) -> models.Repository | None:
    if not isinstance(name, str) or not name:
        return None
    with transaction(run.sessions) as session:
        row = session.scalar(select(models.Repository).where(models.Repository.tenant_id == repo.tenant_id,
                                                             models.Repository.name == name))
        if row is not None:
            session.expunge(row)
        return row
