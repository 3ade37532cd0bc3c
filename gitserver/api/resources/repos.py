"""Repositories, their grants, deploy keys and push audit log.

Tenant admins create repositories; a member lists and reads only what it can read (hidden
repositories answer 404 exactly like missing ones, through :func:`lookup.visible_repo`); the
admins of a repository change its settings, grants and deploy keys. Nobody deletes one: history
is protected (docs/contract.md, Protected history), so DELETE answers 405 and deletes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver import access, admin
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_repo, visible_tenant
from gitserver.api.paging import OPENAPI_PARAMETERS, list_schema, page
from gitserver.api.resources.groups import GROUP_PARAM
from gitserver.api.resources.tenants import (
    DESCRIPTION_FIELD,
    NAME_FIELD,
    NAME_SCHEMA,
    QUOTA_SCHEMA,
    SIZE_SCHEMA,
    TENANT,
    TENANT_PARAM,
    quota_field,
)
from gitserver.api.resources.users import DATETIME, ID_CONVERTER, ID_SCHEMA, NULLABLE_DATETIME, USER_PARAM
from gitserver.config import Config
from gitserver.db import models
from gitserver.errors import InvalidInput, PolicyRefused
from gitserver.git import bundles, head, limits
from gitserver.git.store import RepoStore
from gitserver.pipelines import oncreate
from gitserver.urls import bundle_url, http_clone_url, ssh_clone_url

REPOS = f"{TENANT}/repos"
REPO = f"{REPOS}/{{repo}}"
GRANTS = f"{REPO}/grants"
USER_GRANT = f"{GRANTS}/users/{{user}}"
GROUP_GRANT = f"{GRANTS}/groups/{{group}}"
DEPLOY_KEYS = f"{REPO}/deploy-keys"
DEPLOY_KEY = f"{DEPLOY_KEYS}/{{deploy_key_id:{ID_CONVERTER}}}"
PUSHES = f"{REPO}/pushes"
TAG = "repositories"
MAX_REF_FILTER = 1024

DELETE_REFUSED = ("repositories cannot be deleted: history is protected in gitserver, "
                  "so nothing that was pushed can be removed (make it private instead)")


def repo_path(tenant: str, repo: str) -> str:
    return f"/api/v1/tenants/{tenant}/repos/{repo}"


def repo_json(repo: models.Repository, config: Config, size_bytes: int | None = None) -> dict[str, Any]:
    """``size_bytes`` (measured on disk) only when given: lists leave it out, it costs a walk."""
    tenant = repo.tenant.name
    store = RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir)
    out = {"id": repo.id, "tenant": tenant, "name": repo.name, "description": repo.description,
           "visibility": repo.visibility, "builds_enabled": repo.builds_enabled,
           "default_branch": head.default_branch(store.path(tenant, repo.name)),
           "ssh_url": ssh_clone_url(config.ssh_base_url, tenant, repo.name),
           "http_url": http_clone_url(config.http_base_url, tenant, repo.name),
           "bundle_url": (bundle_url(config.http_base_url, tenant, repo.name)
                          if bundles.bundle_path(config.bundles_dir, tenant, repo.name).is_file() else None),
           "quota_bytes": repo.quota_bytes, "created_at": repo.created_at,
           # As Repour's /internal-scm received them (PNC); null/[] for other repositories.
           "parent_project": repo.parent_project, "owner_groups": _json_list(repo.owner_groups)}
    if size_bytes is not None:
        out["size_bytes"] = size_bytes
    return out


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def repo_size(store: RepoStore, repo: models.Repository) -> int:
    """Bytes the repository takes on disk, as push quotas count them."""
    return limits.disk_usage(store.path(repo.tenant.name, repo.name))


def grant_json(session: Session, grant: models.Grant) -> dict[str, Any]:
    user = session.get(models.User, grant.user_id) if grant.user_id else None
    group = session.get(models.Group, grant.group_id) if grant.group_id else None
    return {"id": grant.id, "permission": grant.permission,
            "user": user.name if user else None, "group": group.name if group else None,
            "created_at": grant.created_at}


def deploy_key_json(deploy: models.DeployKey) -> dict[str, Any]:
    key = deploy.public_key
    return {"id": deploy.id, "fingerprint": key.fingerprint, "key_type": key.key_type, "bits": key.bits,
            "title": key.title, "key": key.key_data, "write": deploy.write,
            "created_at": deploy.created_at, "last_used_at": key.last_used_at, "expires_at": key.expires_at}


def push_json(push: models.Push, user_names: dict[int, str], show_address: bool = False) -> dict[str, Any]:
    """``show_address``: the pusher's network address is personal data, shown only to the
    admins of the repository's tenant (a public repository's audit is readable by anyone)."""
    return {"id": push.id, "user": user_names.get(push.user_id) if push.user_id else None,
            "key_fingerprint": push.key_fingerprint, "protocol": push.protocol,
            "client_address": push.client_address if show_address else None, "state": push.state,
            "created_at": push.created_at,
            "push_options": json.loads(push.push_options or "[]"),
            "ref_updates": [{"ref": u.ref, "old": u.old, "new": u.new} for u in push.ref_updates]}


VISIBILITY_DESCRIPTION = ("private: grants only; internal: every member of the tenant reads; "
                          "public: everyone reads")


class Repos:
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": NAME_FIELD,
              "description": DESCRIPTION_FIELD,
              "visibility": Field(str, choices=models.VISIBILITIES, description=VISIBILITY_DESCRIPTION),
              "builds_enabled": Field(bool)}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            data = read_json(req, self.FIELDS)
            repo = oncreate.create_repository(session, self.ctx.runtime.store, row, data["name"],
                                              data.get("description", ""), data.get("visibility", "private"))
            if data.get("builds_enabled"):
                admin.update_repo(session, repo, builds_enabled=True)
            resp.media = repo_json(repo, self.ctx.config, repo_size(self.ctx.runtime.store, repo))
        resp.status = falcon.HTTP_201
        resp.location = repo_path(tenant, repo.name)

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            resp.media = page(session, access.readable_repos(principal, row.id), models.Repository.id, req,
                              serialize=lambda r: repo_json(r, self.ctx.config))


class Repo:
    PATCH_FIELDS: ClassVar[Mapping[str, Field]] = {"description": DESCRIPTION_FIELD,
                    "visibility": Field(str, choices=models.VISIBILITIES, description=VISIBILITY_DESCRIPTION),
                    "builds_enabled": Field(bool, description="run .gitserver/pipeline.toml builds on push"),
                    "quota_bytes": quota_field("the tenant's admins"),
                    "default_branch": Field(str, max_length=255, description="an existing branch; becomes HEAD")}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            resp.media = repo_json(row, self.ctx.config, repo_size(self.ctx.runtime.store, row))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            data = read_json(req, self.PATCH_FIELDS)
            if "quota_bytes" in data:
                admin.set_repo_quota(session, principal, row, data["quota_bytes"])
            admin.update_repo(session, row, self.ctx.runtime.store, description=data.get("description"),
                              visibility=data.get("visibility"), builds_enabled=data.get("builds_enabled"),
                              default_branch=data.get("default_branch"))
            resp.media = repo_json(row, self.ctx.config, repo_size(self.ctx.runtime.store, row))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        # Look it up first: a hidden repository must still answer 404, like a missing one.
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            visible_repo(session, principal, tenant, repo)
        resp.set_header("Allow", "GET, PATCH")
        raise PolicyRefused(DELETE_REFUSED)


class Grants:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            resp.media = page(session, admin.grants_query(row), models.Grant.id, req,
                              serialize=lambda g: grant_json(session, g))


class _Grant:
    """PUT/GET/DELETE of one grant; subclasses say whether the grantee is a user or a group."""

    FIELDS: ClassVar[Mapping[str, Field]] = {"permission": Field(str, required=True, choices=models.PERMISSIONS)}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _target(self, session: Session, principal: access.Principal, tenant: str,
                repo: str, name: str, need: str) -> tuple[access.Granted, dict[str, Any]]:
        granted = access.authorise(session, principal, tenant, repo, need)
        return granted, self.grantee(session, granted.repo, name)

    def _get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, name: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, name, access.ADMIN)
            resp.media = grant_json(session, admin.get_grant(session, granted.repo, **who))

    def _put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, name: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, name, access.ADMIN)
            row = granted.repo
            permission = read_json(req, self.FIELDS)["permission"]
            admin.check_grantable(granted.permission, permission)
            existed = session.scalar(select(models.Grant.id).where(*self._match(row, who))) is not None
            grant = admin.set_grant(session, row, permission, **who)
            resp.media = grant_json(session, grant)
        if not existed:
            resp.status = falcon.HTTP_201
            resp.location = req.path

    def _delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, name: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, name, access.ADMIN)
            admin.remove_grant(session, granted.repo, **who)
        resp.status = falcon.HTTP_204

    @staticmethod
    def _match(repo: models.Repository, who: dict[str, Any]) -> list[Any]:
        if who.get("user") is not None:
            return [models.Grant.repo_id == repo.id, models.Grant.user_id == who["user"].id]
        return [models.Grant.repo_id == repo.id, models.Grant.group_id == who["group"].id]


class UserGrant(_Grant):
    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        return {"user": admin.get_user(session, repo.tenant, name)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, user: str) -> None:
        self._get(req, resp, tenant, repo, user)

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, user: str) -> None:
        self._put(req, resp, tenant, repo, user)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, user: str) -> None:
        self._delete(req, resp, tenant, repo, user)


class GroupGrant(_Grant):
    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        return {"group": admin.get_group(session, repo.tenant, name)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, group: str) -> None:
        self._get(req, resp, tenant, repo, group)

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, group: str) -> None:
        self._put(req, resp, tenant, repo, group)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, group: str) -> None:
        self._delete(req, resp, tenant, repo, group)


class DeployKeys:
    FIELDS: ClassVar[Mapping[str, Field]] = {"key": Field(str, required=True, max_length=16 * 1024),
              "title": Field(str, max_length=200),
              "write": Field(bool, description="default false: read-only")}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted = access.authorise(session, principal, tenant, repo, access.ADMIN)
            row = granted.repo
            data = read_json(req, self.FIELDS)
            write = data.get("write", False)
            if write:
                admin.check_grantable(granted.permission, access.WRITE)
            deploy = admin.add_deploy_key(session, row, data["key"], data.get("title", ""), write,
                                          expires_at=principal.token_expires_at)
            resp.media = deploy_key_json(deploy)
        resp.status = falcon.HTTP_201
        resp.location = f"{repo_path(tenant, row.name)}/deploy-keys/{deploy.id}"

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            resp.media = page(session, admin.deploy_keys_query(row), models.DeployKey.id, req,
                              serialize=deploy_key_json)


class DeployKey:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
               deploy_key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            resp.media = deploy_key_json(admin.get_deploy_key(session, row, deploy_key_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                  deploy_key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            admin.remove_deploy_key(session, admin.get_deploy_key(session, row, deploy_key_id))
        resp.status = falcon.HTTP_204


class Pushes:
    """The audit log, newest first; ``ref`` and ``user`` narrow it."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            ref = req.get_param("ref") or None
            if ref is not None and (len(ref) > MAX_REF_FILTER or "\x00" in ref):
                raise InvalidInput(f"ref must be at most {MAX_REF_FILTER} characters, without NUL",
                                   field="ref")
            user_name = req.get_param("user")
            user: models.User | bool | None = None
            if user_name:
                user = admin.find_user(session, row.tenant, user_name) or False
            state = req.get_param("state") or None
            if state is not None and state not in (*models.PUSH_STATES, "all"):
                raise InvalidInput(f"state must be one of {', '.join(models.PUSH_STATES)} or all",
                                   field="state")
            result = page(session, admin.pushes_query(row, ref=ref, user=user, state=state),
                          models.Push.id, req,
                          descending=True)
            ids = {p.user_id for p in result["items"] if p.user_id}
            names = dict(session.execute(select(models.User.id, models.User.name)
                                         .where(models.User.id.in_(ids))).tuples().all()) if ids else {}
            show = principal.is_tenant_admin(row.tenant_id)
            resp.media = {"items": [push_json(p, names, show) for p in result["items"]], "next": result["next"]}


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(REPOS, Repos(ctx))
    app.add_route(REPO, Repo(ctx))
    app.add_route(GRANTS, Grants(ctx))
    app.add_route(USER_GRANT, UserGrant(ctx))
    app.add_route(GROUP_GRANT, GroupGrant(ctx))
    app.add_route(DEPLOY_KEYS, DeployKeys(ctx))
    app.add_route(DEPLOY_KEY, DeployKey(ctx))
    app.add_route(PUSHES, Pushes(ctx))


REPO_PARAM = oa.path_param("repo", "repository name (without .git)", NAME_SCHEMA)
_DEPLOY_KEY_ID = oa.path_param("deploy_key_id", "deploy key id", ID_SCHEMA)
_VISIBILITY = {"type": "string", "enum": list(models.VISIBILITIES), "description": VISIBILITY_DESCRIPTION}
_PERMISSION = {"type": "string", "enum": list(models.PERMISSIONS)}
_DEFAULT_BRANCH = ("the branch HEAD names, which clones check out (the first branch pushed to "
                   "an empty repository, or the one set here)")
_NO_CONTENT = {"description": "Done"}

# The request bodies, documented from the Fields their handlers validate with.
REQUEST_BODIES = {"NewRepository": Repos.FIELDS, "RepositoryChange": Repo.PATCH_FIELDS,
                  "GrantChange": _Grant.FIELDS, "NewDeployKey": DeployKeys.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    "Repository": {
        "type": "object",
        "required": ["id", "tenant", "name", "description", "visibility", "builds_enabled",
                     "default_branch", "ssh_url",
                     "http_url", "quota_bytes", "created_at"],
        "properties": {"id": {"type": "integer"}, "tenant": {"type": "string"}, "name": {"type": "string"},
                       "description": {"type": "string"}, "visibility": _VISIBILITY,
                       "builds_enabled": {"type": "boolean"},
                       "parent_project": {"type": ["string", "null"],
                                          "description": "as sent to /internal-scm (recorded only)"},
                       "owner_groups": {"type": "array", "items": {"type": "string"},
                                        "description": "as sent to /internal-scm, e.g. ldap/jboss-prod"},
                       "default_branch": {"type": ["string", "null"], "description": _DEFAULT_BRANCH},
                       "ssh_url": {"type": "string", "description": "for git clone/push over SSH"},
                       "http_url": {"type": "string", "description": "read-only smart HTTP"},
                       "bundle_url": {"type": ["string", "null"], "description": "for git clone "
                                      "--bundle-uri; same credentials as http_url; null: no bundle yet"},
                       "quota_bytes": QUOTA_SCHEMA,
                       "size_bytes": SIZE_SCHEMA,
                       "created_at": DATETIME},
    },
    "RepositoryList": list_schema("#/components/schemas/Repository"),
    "Grant": {
        "type": "object", "required": ["id", "permission", "user", "group", "created_at"],
        "properties": {"id": {"type": "integer"}, "permission": _PERMISSION,
                       "user": {"type": ["string", "null"]}, "group": {"type": ["string", "null"]},
                       "created_at": DATETIME},
    },
    "GrantList": list_schema("#/components/schemas/Grant"),
    "DeployKey": {
        "type": "object",
        "required": ["id", "fingerprint", "key_type", "bits", "title", "key", "write", "created_at",
                     "last_used_at", "expires_at"],
        "properties": {"id": {"type": "integer"}, "fingerprint": {"type": "string"},
                       "key_type": {"type": "string"}, "bits": {"type": "integer"},
                       "title": {"type": "string"}, "key": {"type": "string"}, "write": {"type": "boolean"},
                       "created_at": DATETIME, "last_used_at": NULLABLE_DATETIME,
                       "expires_at": {**NULLABLE_DATETIME, "description": "the expiry of the API token "
                                      "that added the key; null: never"}},
    },
    "DeployKeyList": list_schema("#/components/schemas/DeployKey"),
    "Push": {
        "type": "object",
        "required": ["id", "user", "key_fingerprint", "protocol", "client_address", "state", "created_at",
                     "push_options", "ref_updates"],
        "properties": {
            "id": {"type": "integer"}, "user": {"type": ["string", "null"]},
            "key_fingerprint": {"type": "string"}, "protocol": {"type": "string"},
            "client_address": {"type": ["string", "null"],
                               "description": "where the push came from; null unless the caller "
                                              "administers the repository's tenant"},
            "created_at": DATETIME,
            "state": {"type": "string", "enum": list(models.PUSH_STATES),
                      "description": "done: recorded by the push itself; recovered: recorded by the "
                                     "reconciler (the pusher or the server died before the push was "
                                     "done, or the ref was written outside a push); pending: its refs "
                                     "are being moved; failed: no ref moved"},
            "push_options": {"type": "array", "items": {"type": "string"},
                             "description": "git push -o options as given (docs/compatibility.md)"},
            "ref_updates": {"type": "array", "items": {
                "type": "object", "required": ["ref", "old", "new"],
                "properties": {"ref": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}}}},
        },
    },
    "PushList": list_schema("#/components/schemas/Push"),
}

_GRANT_RESPONSES = {200: ("Updated", oa.ref("Grant")),
                    201: ("Created; Location names it", oa.ref("Grant"))}

OPENAPI_PATHS: dict[str, Any] = {
    REPOS: {
        "parameters": [TENANT_PARAM],
        "post": oa.op("createRepository", "Create a protected repository (tenant admins)", TAG,
                      {201: ("Created; Location names it", oa.ref("Repository"))},
                      errors=(400, 401, 403, 404, 409), body=oa.json_body(oa.ref("NewRepository"))),
        "get": oa.op("listRepositories", "Repositories of a tenant the caller can read", TAG,
                     {200: ("A page of repositories", oa.ref("RepositoryList"))},
                     errors=(400, 401, 404), parameters=OPENAPI_PARAMETERS),
    },
    REPO: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("getRepository", "One repository", TAG, {200: ("The repository", oa.ref("Repository"))},
                     errors=(401, 403, 404)),
        "patch": oa.op("updateRepository", "Change description, visibility or builds (repository admins)",
                       TAG, {200: ("The changed repository", oa.ref("Repository"))},
                       body=oa.json_body(oa.ref("RepositoryChange"))),
        "delete": oa.op("deleteRepository", "Always refused: history is protected", TAG, {},
                        errors=(401, 403, 404, 405)),
    },
    GRANTS: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("listGrants", "Grants on a repository (repository admins)", TAG,
                     {200: ("A page of grants", oa.ref("GrantList"))}, parameters=OPENAPI_PARAMETERS),
    },
    USER_GRANT: {
        "parameters": [TENANT_PARAM, REPO_PARAM, USER_PARAM],
        "get": oa.op("getUserGrant", "A user's grant", TAG, {200: ("The grant", oa.ref("Grant"))},
                     errors=(401, 403, 404)),
        "put": oa.op("setUserGrant", "Give a user read, write or admin (at most what the caller holds)", TAG,
                     _GRANT_RESPONSES, body=oa.json_body(oa.ref("GrantChange"))),
        "delete": oa.op("removeUserGrant", "Take a user's grant away", TAG, {204: _NO_CONTENT},
                        errors=(401, 403, 404)),
    },
    GROUP_GRANT: {
        "parameters": [TENANT_PARAM, REPO_PARAM, GROUP_PARAM],
        "get": oa.op("getGroupGrant", "A group's grant", TAG, {200: ("The grant", oa.ref("Grant"))},
                     errors=(401, 403, 404)),
        "put": oa.op("setGroupGrant", "Give a group read, write or admin (at most what the caller holds)",
                     TAG, _GRANT_RESPONSES, body=oa.json_body(oa.ref("GrantChange"))),
        "delete": oa.op("removeGroupGrant", "Take a group's grant away", TAG, {204: _NO_CONTENT},
                        errors=(401, 403, 404)),
    },
    DEPLOY_KEYS: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "post": oa.op("addDeployKey", "Add a deploy key (read-only unless write is true)", TAG,
                      {201: ("Added; Location names it", oa.ref("DeployKey"))},
                      errors=(400, 401, 403, 404, 409), body=oa.json_body(oa.ref("NewDeployKey"))),
        "get": oa.op("listDeployKeys", "Deploy keys of a repository", TAG,
                     {200: ("A page of deploy keys", oa.ref("DeployKeyList"))}, parameters=OPENAPI_PARAMETERS),
    },
    oa.openapi_path(DEPLOY_KEY): {
        "parameters": [TENANT_PARAM, REPO_PARAM, _DEPLOY_KEY_ID],
        "get": oa.op("getDeployKey", "One deploy key", TAG, {200: ("The deploy key", oa.ref("DeployKey"))},
                     errors=(401, 403, 404)),
        "delete": oa.op("deleteDeployKey", "Remove a deploy key; it stops working at the next connection",
                        TAG, {204: _NO_CONTENT}, errors=(401, 403, 404)),
    },
    PUSHES: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("listPushes", "The push audit log, newest first", TAG,
                     {200: ("A page of pushes with their ref updates", oa.ref("PushList"))},
                     parameters=[*OPENAPI_PARAMETERS,
                                 oa.query_param("ref", "only pushes that updated this ref "
                                                "(full name, or a branch or tag name)",
                                                {"type": "string", "maxLength": MAX_REF_FILTER}),
                                 oa.query_param("user", "only pushes by this user of the tenant"),
                                 oa.query_param("state", "only pushes in this state; default: the "
                                                "ledger (done and recovered), 'all' for every state",
                                                {"type": "string",
                                                 "enum": [*models.PUSH_STATES, "all"]})]),
    },
}
