"""Repositories: create (row and bare repository), look up, change settings and quota.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.git import head, refs
from gitserver.git.store import RepoStore
from gitserver.policy import access
from gitserver.policy.errors import Conflict, Forbidden, InvalidInput, NotFound
from gitserver.policy.names import name_problem, validate_name


def get_repo(session: Session, tenant: models.Tenant, name: str) -> models.Repository:
    if name.endswith(".git"):
        name = name[:-4]
    if name_problem(name):
        raise NotFound(f"repository {tenant.name}/{name[:100]} not found")
    repo = session.scalar(select(models.Repository).where(models.Repository.tenant_id == tenant.id,
                                                          models.Repository.name == name))
    if repo is None:
        raise NotFound(f"repository {tenant.name}/{name} not found")
    return repo


def validate_visibility(visibility: object) -> str:
    if visibility not in models.VISIBILITIES:
        raise InvalidInput(f"visibility must be one of {', '.join(models.VISIBILITIES)}",
                           field="visibility")
    return visibility


def create_repo(session: Session, store: RepoStore, tenant: models.Tenant, name: str,
                description: str = "", visibility: str = "private") -> models.Repository:
    """Create the row and the bare repository. The directory is made last, after the row is
    flushed, and removed again if the flush fails: no half-created repository remains.

    The fronts (API, CLI, Repour's /internal-scm) call
    :func:`gitserver.pipelines.oncreate.create_repository`, which also announces the new
    repository; this alone announces nothing (tests and the benchmark set up with it)."""
    validate_name(name, "name")
    validate_visibility(visibility)
    base.validate_description(description)
    if session.scalar(select(models.Repository.id).where(models.Repository.tenant_id == tenant.id,
                                                         models.Repository.name == name)) is not None:
        raise Conflict(f"repository {tenant.name}/{name} already exists")
    repo = models.Repository(tenant_id=tenant.id, name=name, description=description,
                             visibility=visibility, tenant=tenant)
    session.add(repo)
    base.flush(session, f"repository {tenant.name}/{name} already exists")
    if not store.exists(tenant.name, name):
        store.create(tenant.name, name, description)
    return repo


def update_repo(session: Session, repo: models.Repository, store: RepoStore | None = None, *,
                description: str | None = None, visibility: str | None = None,
                builds_enabled: bool | None = None,
                default_branch: str | None = None) -> models.Repository:
    """Change a repository's settings. Nothing about its history can be changed here."""
    if default_branch is not None and store is None:
        raise InvalidInput("default_branch: the repository store is not available")
    if description is not None:
        repo.description = base.validate_description(description)
    if visibility is not None:
        repo.visibility = validate_visibility(visibility)
    if builds_enabled is not None:
        repo.builds_enabled = bool(builds_enabled)
    if default_branch is not None and store is not None:
        # Last: every other field is valid by now, so a refused request changes nothing.
        _set_default_branch(store.path(repo.tenant.name, repo.name), default_branch,
                            f"{repo.tenant.name}/{repo.name}")
    session.flush()
    if description is not None and store is not None and store.exists(repo.tenant.name, repo.name):
        # gitweb-style tools read the description file; keep it in step with the row.
        (store.path(repo.tenant.name, repo.name) / "description").write_text(
            (description or repo.name)[:500] + "\n")
    return repo


def _set_default_branch(path: Path, branch: str, where: str) -> None:
    """Point HEAD at an existing branch (``main`` or ``refs/heads/main``)."""
    branch = branch.removeprefix(refs.HEADS)
    problem = refs.ref_format_problem(refs.HEADS + branch)
    if problem is not None:
        raise InvalidInput(f"default_branch: {problem}")
    if not head.branch_exists(path, branch):
        raise InvalidInput(f"default_branch: there is no branch '{branch}' in {where}; "
                           "push it first")
    head.set_default_branch(path, branch)


def set_repo_quota(session: Session, principal: access.Principal, repo: models.Repository,
                   quota_bytes: int | None) -> None:
    """Only the tenant's admins set a repository's quota: a repository admin raising its own
    quota would defeat it."""
    if not principal.is_tenant_admin(repo.tenant_id):
        raise Forbidden(f"only the admins of tenant {repo.tenant.name!r} may set quota_bytes")
    repo.quota_bytes = base.validate_quota(quota_bytes)
    session.flush()
