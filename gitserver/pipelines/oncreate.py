"""Creating a repository, and what follows it, whichever front creates it: the API, the CLI
and Repour's ``/internal-scm`` all call :func:`create_repository`, the one place a repository is
created and announced, in the creating transaction.

* The tenant's webhooks get a ``repository`` event with action ``created``.
* When the tenant names a *create template* (``create_template``, a repository of the same
  tenant), a pipeline of kind ``create`` is queued for the new repository. A worker runs the
  steps of the template's ``.gitserver/pipeline.toml`` (at the tip of the template's default
  branch) in a clone of the template, with the new repository's coordinates in ``GITSERVER_*``
  variables (:func:`plan_create`): what Solum needs to provision an application when a
  repository appears.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pygit2
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gitserver.admin import repos
from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import refs
from gitserver.git.archive import read_blob
from gitserver.git.store import DEFAULT_BRANCH, RepoStore
from gitserver.net.urls import http_clone_url, ssh_clone_url
from gitserver.pipelines import build, jobs, outbox, pipelinefile
from gitserver.pipelines.archive import find_archive

log = logging.getLogger(__name__)

EVENT_ENV = {"GITSERVER_EVENT": outbox.EVENT_REPOSITORY, "GITSERVER_ACTION": outbox.REPOSITORY_CREATED}


def create_repository(session: Session, store: RepoStore, tenant: models.Tenant, name: str,
                      description: str = "", visibility: str = "private") -> models.Repository:
    """:func:`gitserver.admin.repos.create_repo`, then :func:`repository_created` (caller's session,
    never committed: the events exist if and only if the repository does)."""
    repo = repos.create_repo(session, store, tenant, name, description, visibility)
    repository_created(session, repo)
    return repo


def repository_created(session: Session, repo: models.Repository) -> models.Pipeline | None:
    """Queue what a new repository sets off (caller's transaction); the create pipeline, if any."""
    outbox.notify_repository(session, repo, outbox.REPOSITORY_CREATED)
    return enqueue_create_pipeline(session, repo)


def enqueue_create_pipeline(session: Session, repo: models.Repository) -> models.Pipeline | None:
    tenant = session.get(models.Tenant, repo.tenant_id)
    template = tenant.create_template if tenant is not None else ""
    if not template or template == repo.name:  # the template itself sets nothing off
        return None
    pipeline = models.Pipeline(repo_id=repo.id, kind=models.PipelineKind.CREATE,
                               request=json.dumps({"template": template}))
    session.add(pipeline)
    session.flush()
    jobs.enqueue(session, jobs.JobKind.PIPELINE, {"pipeline_id": pipeline.id}, pipeline_id=pipeline.id)
    log.info("repository %s created: create pipeline %s queued (template %s)", repo.full_name,
             pipeline.id, template)
    return pipeline


class TemplateProblem(Exception):
    """The create template cannot be run; the message says why (shown in the pipeline)."""


@dataclasses.dataclass(frozen=True)
class CreatePlan:
    """What a ``create`` pipeline runs: ``specs`` in clones of ``clone_ref`` of the template at
    ``path``, told ``coords``; no specs when there is nothing to run."""

    summary: str
    specs: list[pipelinefile.StepSpec]
    coords: build.Coordinates | None = None
    path: Path | None = None
    clone_ref: str = ""


def plan_create(sessions: sessionmaker[Session], store: RepoStore, cfg: Config, repo: models.Repository,
                request: dict[str, Any], pipeline_id: int) -> CreatePlan:
    """Read the template's pipeline file for the new repository ``repo``; record the template
    commit as the pipeline's ref and commit. TemplateProblem when it cannot run."""
    template = _template(sessions, repo, request.get("template"))
    path = store.path(repo.tenant.name, template.name)
    git = pygit2.Repository(str(path))
    branch = git.references.get(refs.HEADS + DEFAULT_BRANCH)
    if branch is None:
        return CreatePlan(f"template {template.full_name} has no {DEFAULT_BRANCH} branch: nothing to run", [])
    commit = branch.peel(pygit2.Commit)
    data = read_blob(git, str(commit.tree_id), pipelinefile.PIPELINE_FILE, pipelinefile.MAX_PIPELINE_FILE)
    if data is None:
        return CreatePlan(f"no {pipelinefile.PIPELINE_FILE} in template {template.full_name}: nothing to run", [])
    try:
        spec = pipelinefile.parse_pipeline(data.decode("utf-8"))
    except (ValueError, pipelinefile.PipelineFileError) as exc:
        raise TemplateProblem(f"template {template.full_name}: {exc}") from exc
    with transaction(sessions) as session:
        archive = find_archive(session, template.id, str(commit.tree_id))
        pipeline = session.get(models.Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.ref = refs.HEADS + DEFAULT_BRANCH
        pipeline.commit = str(commit.id)
    # The archive tag of the template's tree is immutable; before its archive exists the
    # branch is cloned (the same commit unless the template moved meanwhile).
    clone_ref = archive.tag if archive is not None else DEFAULT_BRANCH
    coords = build.Coordinates(
        repo=repo.full_name, ref="", commit="", tag="",
        readonly_url=http_clone_url(cfg.http_base_url, repo.tenant.name, repo.name),
        extra=(*EVENT_ENV.items(),
               ("GITSERVER_SSH_URL", ssh_clone_url(cfg.ssh_base_url, repo.tenant.name, repo.name)),
               ("GITSERVER_TEMPLATE", template.full_name),
               ("GITSERVER_TEMPLATE_COMMIT", str(commit.id))))
    return CreatePlan(f"template {template.full_name} at {str(commit.id)[:12]} ({clone_ref}): "
                      f"{len(spec.steps)} step(s) for {repo.full_name}", spec.steps, coords, path, clone_ref)


def _template(sessions: sessionmaker[Session], repo: models.Repository, name: object) -> models.Repository:
    row = None
    if isinstance(name, str) and name:
        with transaction(sessions) as session:
            row = session.scalar(select(models.Repository).where(models.Repository.tenant_id == repo.tenant_id,
                                                                 models.Repository.name == name))
            if row is not None:
                session.expunge(row)
    if row is None:
        raise TemplateProblem(f"create template {name!r} is not a repository of tenant {repo.tenant.name}")
    return row
