"""The JSON objects of the REST API (users, keys, tokens, repositories, pipelines), in one
place for every front that shows them.

The REST API answers with them and the SSH self-service commands print them with ``--json``
(docs/cli.md): both must give the same fields for the same object, so neither front owns
them (the SSH front may not import the API, docs/architecture.md). Their OpenAPI schemas stay
with the API resources that serve them.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from gitserver.admin import tokens as admin_tokens
from gitserver.config import Config
from gitserver.db import models
from gitserver.git import bundles, head
from gitserver.git.store import RepoStore
from gitserver.net.urls import http_clone_url, pipeline_url, ssh_clone_url
from gitserver.pipelines import logstore
from gitserver.push import limits


def json_default(obj: Any) -> Any:
    """Datetimes as ISO 8601 (``2026-01-01T00:00:00+00:00``), anything else as its str."""
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return str(obj)


def dumps(obj: Any) -> str:
    """``obj`` as the API's JSON text."""
    return json.dumps(obj, default=json_default)


def user_json(user: models.User) -> dict[str, Any]:
    return {"id": user.id, "tenant": user.tenant.name, "name": user.name, "role": user.role,
            "disabled": user.disabled, "created_at": user.created_at}


def key_json(key: models.PublicKey) -> dict[str, Any]:
    return {"id": key.id, "fingerprint": key.fingerprint, "key_type": key.key_type, "bits": key.bits,
            "title": key.title, "key": key.key_data, "created_at": key.created_at,
            "last_used_at": key.last_used_at, "expires_at": key.expires_at}


def token_json(token: models.ApiToken) -> dict[str, Any]:
    """A token as listed: everything but the secret, which is never stored."""
    return {"id": token.id, "name": token.name, "scopes": admin_tokens.token_scopes(token),
            "expires_at": token.expires_at, "revoked_at": token.revoked_at,
            "last_used_at": token.last_used_at, "created_at": token.created_at}


def repo_json(repo: models.Repository, config: Config, size_bytes: int | None = None) -> dict[str, Any]:
    """``size_bytes`` (measured on disk) only when given: lists leave it out, it costs a walk."""
    tenant = repo.tenant.name
    store = RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir)
    out = {"id": repo.id, "tenant": tenant, "name": repo.name, "description": repo.description,
           "visibility": repo.visibility, "builds_enabled": repo.builds_enabled,
           "default_branch": head.default_branch(store.path(tenant, repo.name)),
           "ssh_url": ssh_clone_url(config.ssh_base_url, tenant, repo.name),
           "http_url": http_clone_url(config.http_base_url, tenant, repo.name),
           "bundle_url": bundles.published_url(config.bundles_dir, config.http_base_url, tenant, repo.name),
           "quota_bytes": repo.quota_bytes, "created_at": repo.created_at,
           # As Repour's /internal-scm received them (PNC); null/[] for other repositories.
           "parent_project": repo.parent_project, "owner_groups": json_list(repo.owner_groups)}
    if size_bytes is not None:
        out["size_bytes"] = size_bytes
    return out


def json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def repo_size(store: RepoStore, repo: models.Repository) -> int:
    """Bytes the repository takes, as push quotas count them: on disk, and its pipeline logs."""
    return limits.disk_usage(store.path(repo.tenant.name, repo.name)) + logstore.stored_bytes(repo)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def pipeline_json(pipeline: models.Pipeline, repo: models.Repository, base_url: str) -> dict[str, Any]:
    url = pipeline_url(base_url, pipeline.id)
    return {"id": pipeline.id, "tenant": repo.tenant.name, "repo": repo.name, "kind": pipeline.kind,
            "status": pipeline.status, "ref": pipeline.ref, "commit": pipeline.commit,
            "archive_tag": pipeline.archive_tag or None, "error": pipeline.error,
            "push_id": pipeline.push_id, "task_id": pipeline.task_id, "created_at": pipeline.created_at,
            "started_at": pipeline.started_at, "finished_at": pipeline.finished_at,
            "queued_seconds": _seconds(pipeline.created_at, pipeline.started_at),
            "duration_seconds": _seconds(pipeline.started_at, pipeline.finished_at),
            "url": url, "log_url": f"{url}/log"}


def step_json(step: models.Step) -> dict[str, Any]:
    return {"position": step.position, "name": step.name, "status": step.status,
            "exit_code": step.exit_code, "message": step.message, "started_at": step.started_at,
            "finished_at": step.finished_at,
            "duration_seconds": _seconds(step.started_at, step.finished_at)}
