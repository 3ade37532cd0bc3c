"""The JSON objects both fronts show (users, keys, tokens, repositories, pipelines), each
declared once as a :class:`~gitserver.jsonshape.Shape`: its JSON and its OpenAPI schema come
from that one declaration.

The REST API answers with them and documents their schemas; the SSH self-service commands
print them with ``--json`` (docs/cli.md). Both must give the same fields for the same object,
so neither front owns them (the SSH front may not import the API, docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from gitserver.admin import base
from gitserver.admin import tokens as admin_tokens
from gitserver.config import Config
from gitserver.db import models
from gitserver.git import bundles, head
from gitserver.git.store import RepoStore
from gitserver.jsonshape import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    NULLABLE_DATETIME,
    NULLABLE_INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    STRING,
    STRINGS,
    Out,
    Shape,
    enum,
    enums,
)
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


# --- fields several objects have --------------------------------------------------------------

QUOTA_DESCRIPTION = "disk quota in bytes; pushes that would exceed it are refused; null: no quota"
QUOTA = Out({"type": ["integer", "null"], "minimum": 1, "maximum": base.MAX_QUOTA_BYTES}, QUOTA_DESCRIPTION,
            attr="quota_bytes")
# Measured on disk by the caller; lists leave it out (it costs a walk of the repositories).
SIZE = Out({"type": "integer", "minimum": 0}, "bytes on disk now, as quotas count them (not in lists)",
           given=True, required=False)


def sized(size_bytes: int | None) -> dict[str, int]:
    """The ``size_bytes`` to give a shape with :data:`SIZE`: none when it was not measured."""
    return {} if size_bytes is None else {"size_bytes": size_bytes}


KEY_EXPIRY_DESCRIPTION = "the expiry of the API token that added the key; null: never"


def public_key_outs(key_of: Callable[[Any], models.PublicKey]) -> dict[str, Out]:
    """The fields a user's key and a deploy key show of their public key (``key_of(row)``)."""
    def of(attr: str) -> Callable[[Any], Any]:
        return lambda row: getattr(key_of(row), attr)
    return {"fingerprint": Out(STRING, "SHA256:…, as ssh-keygen -lf", value=of("fingerprint")),
            "key_type": Out(STRING, value=of("key_type")), "bits": Out(INTEGER, value=of("bits")),
            "title": Out(STRING, value=of("title")), "key": Out(STRING, value=of("key_data")),
            "last_used_at": Out(NULLABLE_DATETIME, value=of("last_used_at")),
            "expires_at": Out(NULLABLE_DATETIME, KEY_EXPIRY_DESCRIPTION, value=of("expires_at"))}


# --- users, keys, tokens ----------------------------------------------------------------------

USER = Shape("User", {
    "id": Out(INTEGER), "tenant": Out(STRING, value=lambda user: user.tenant.name), "name": Out(STRING),
    "role": Out(enum(models.ROLES)), "disabled": Out(BOOLEAN), "created_at": Out(DATETIME)})
KEY = Shape("Key", {"id": Out(INTEGER), **public_key_outs(lambda key: key), "created_at": Out(DATETIME)})
# A token as listed: everything but the secret, which is never stored.
TOKEN = Shape("Token", {
    "id": Out(INTEGER), "name": Out(STRING),
    "scopes": Out(enums(admin_tokens.TOKEN_SCOPES), value=admin_tokens.token_scopes),
    "expires_at": Out(NULLABLE_DATETIME), "revoked_at": Out(NULLABLE_DATETIME),
    "last_used_at": Out(NULLABLE_DATETIME), "created_at": Out(DATETIME)})
CREATED_TOKEN = TOKEN.extend("CreatedToken", {"token": Out(STRING, "the secret, shown only once", given=True)})


def user_json(user: models.User) -> dict[str, Any]:
    return USER.render(user)


def key_json(key: models.PublicKey) -> dict[str, Any]:
    return KEY.render(key)


def token_json(token: models.ApiToken) -> dict[str, Any]:
    return TOKEN.render(token)


def created_token_json(token: models.ApiToken, secret: str) -> dict[str, Any]:
    return CREATED_TOKEN.render(token, token=secret)


# --- repositories -----------------------------------------------------------------------------

VISIBILITY_DESCRIPTION = ("private: grants only; internal: every member of the tenant reads; "
                          "public: everyone reads")
_DEFAULT_BRANCH = ("the branch HEAD names, which clones check out (the first branch pushed to "
                   "an empty repository, or the one set here)")


def json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


REPOSITORY = Shape("Repository", {
    "id": Out(INTEGER), "tenant": Out(STRING, value=lambda repo: repo.tenant.name), "name": Out(STRING),
    "description": Out(STRING), "visibility": Out(enum(models.VISIBILITIES), VISIBILITY_DESCRIPTION),
    "builds_enabled": Out(BOOLEAN),
    "default_branch": Out(NULLABLE_STRING, _DEFAULT_BRANCH, given=True),
    "ssh_url": Out(STRING, "for git clone/push over SSH", given=True),
    "http_url": Out(STRING, "read-only smart HTTP", given=True),
    "bundle_url": Out(NULLABLE_STRING, "for git clone --bundle-uri; the same credentials as http_url; "
                      "null: no bundle yet", given=True),
    "quota_bytes": QUOTA, "created_at": Out(DATETIME),
    # As Repour's /internal-scm received them (PNC); null/[] for other repositories.
    "parent_project": Out(NULLABLE_STRING, "as sent to /internal-scm (recorded only)"),
    "owner_groups": Out(STRINGS, "as sent to /internal-scm, e.g. ldap/jboss-prod",
                        value=lambda repo: json_list(repo.owner_groups)),
    "size_bytes": SIZE})


def _repo_given(repo: models.Repository, config: Config) -> dict[str, Any]:
    """What a repository's JSON takes from elsewhere than its row: HEAD on disk and its URLs."""
    tenant = repo.tenant.name
    store = RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir)
    return {"default_branch": head.default_branch(store.path(tenant, repo.name)),
            "ssh_url": ssh_clone_url(config.ssh_base_url, tenant, repo.name),
            "http_url": http_clone_url(config.http_base_url, tenant, repo.name),
            "bundle_url": bundles.published_url(config.bundles_dir, config.http_base_url, tenant, repo.name)}


def repo_json(repo: models.Repository, config: Config, size_bytes: int | None = None) -> dict[str, Any]:
    """``size_bytes`` (measured on disk) only when given: lists leave it out, it costs a walk."""
    return REPOSITORY.render(repo, **_repo_given(repo, config), **sized(size_bytes))


# A repository as ``ssh git@host info`` lists it: with the caller's permission on it.
REACHABLE_REPOSITORY = REPOSITORY.extend("ReachableRepository", {
    "permission": Out({"type": ["string", "null"], "enum": [*models.PERMISSIONS, None]}, given=True)})


def reachable_repo_json(repo: models.Repository, config: Config, permission: str | None) -> dict[str, Any]:
    return REACHABLE_REPOSITORY.render(repo, **_repo_given(repo, config), permission=permission)


def repo_size(store: RepoStore, repo: models.Repository) -> int:
    """Bytes the repository takes, as push quotas count them: on disk, and its pipeline logs."""
    return limits.disk_usage(store.path(repo.tenant.name, repo.name)) + logstore.stored_bytes(repo)


# --- pipelines --------------------------------------------------------------------------------

# What Pipeline.kind holds: a push's pipeline, the Repour operation that made it, or the
# tenant's create template run for a new repository (gitserver.pipelines.oncreate).
PIPELINE_KINDS = ("push", "clone", "adjust", "create")
STATUS = enum(models.STATES)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


PIPELINE = Shape("Pipeline", {
    "id": Out(INTEGER), "tenant": Out(STRING, given=True), "repo": Out(STRING, given=True),
    "kind": Out(enum(PIPELINE_KINDS), "push (archive/build of a push), or clone/adjust (a Repour request)"),
    "status": Out(STATUS), "ref": Out(STRING, "the (first) pushed ref"),
    "commit": Out(STRING, "the pushed commit"),
    "archive_tag": Out(NULLABLE_STRING, "repour-<archive commit id>, once archived",
                       value=lambda pipeline: pipeline.archive_tag or None),
    "error": Out(STRING), "push_id": Out(NULLABLE_INTEGER),
    "task_id": Out(NULLABLE_STRING, "the taskId of the Repour /clone or /adjust request (null otherwise)"),
    "created_at": Out(DATETIME), "started_at": Out(NULLABLE_DATETIME), "finished_at": Out(NULLABLE_DATETIME),
    "queued_seconds": Out(NULLABLE_NUMBER, value=lambda p: _seconds(p.created_at, p.started_at)),
    "duration_seconds": Out(NULLABLE_NUMBER, value=lambda p: _seconds(p.started_at, p.finished_at)),
    "url": Out(STRING, given=True), "log_url": Out(STRING, given=True)})
STEP = Shape("Step", {
    "position": Out(INTEGER), "name": Out(STRING), "status": Out(STATUS), "exit_code": Out(NULLABLE_INTEGER),
    "message": Out(STRING), "started_at": Out(NULLABLE_DATETIME), "finished_at": Out(NULLABLE_DATETIME),
    "duration_seconds": Out(NULLABLE_NUMBER, value=lambda step: _seconds(step.started_at, step.finished_at))})


def pipeline_given(pipeline: models.Pipeline, repo: models.Repository, base_url: str) -> dict[str, Any]:
    """What a pipeline's JSON takes from elsewhere than its row: its repository and URLs."""
    url = pipeline_url(base_url, pipeline.id)
    return {"tenant": repo.tenant.name, "repo": repo.name, "url": url, "log_url": f"{url}/log"}


def pipeline_json(pipeline: models.Pipeline, repo: models.Repository, base_url: str) -> dict[str, Any]:
    return PIPELINE.render(pipeline, **pipeline_given(pipeline, repo, base_url))
