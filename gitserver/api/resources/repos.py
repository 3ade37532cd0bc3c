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

from gitserver.admin import audit, deploy_keys, grants, groups, repos, rules, users
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created, listing
from gitserver.api.lookup import visible_repo, visible_tenant
from gitserver.api.paging import OPENAPI_PARAMETERS, page
from gitserver.api.paths import (
    GROUP_PARAM,
    ID_CONVERTER,
    ID_SCHEMA,
    REPO,
    REPO_PARAM,
    REPOS,
    TENANT_PARAM,
    USER_PARAM,
    repo_path,
)
from gitserver.api.response import schemas
from gitserver.api.shapes import DESCRIPTION_FIELD, NAME_FIELD, quota_field
from gitserver.db import models
from gitserver.git import push_options
from gitserver.jsonshape import BOOLEAN, DATETIME, INTEGER, NULLABLE_STRING, STRING, STRINGS, Out, Shape, each, enum
from gitserver.pipelines import oncreate
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput, PolicyRefused
from gitserver.shapes import REPOSITORY, VISIBILITY_DESCRIPTION, public_key_outs, repo_json, repo_size

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


GRANT = Shape("Grant", {
    "id": Out(INTEGER), "permission": Out(enum(models.PERMISSIONS)),
    "user": Out(NULLABLE_STRING, given=True), "group": Out(NULLABLE_STRING, given=True),
    "created_at": Out(DATETIME)})


def grant_json(session: Session, grant: models.Grant) -> dict[str, Any]:
    user = session.get(models.User, grant.user_id) if grant.user_id else None
    group = session.get(models.Group, grant.group_id) if grant.group_id else None
    return GRANT.render(grant, user=user.name if user else None, group=group.name if group else None)


DEPLOY_KEY_SHAPE = Shape("DeployKey", {
    "id": Out(INTEGER), **public_key_outs(lambda deploy: deploy.public_key), "write": Out(BOOLEAN),
    "created_at": Out(DATETIME)})


def deploy_key_json(deploy: models.DeployKey) -> dict[str, Any]:
    return DEPLOY_KEY_SHAPE.render(deploy)


PUSH_CERTIFICATE: dict[str, Any] = {
    "type": ["object", "null"], "required": ["ca", "key_id", "serial"], "additionalProperties": False,
    "properties": {"ca": {"type": "string", "description": "the CA's SHA256 fingerprint"},
                   "key_id": {"type": "string"}, "serial": {"type": "integer", "minimum": 0}}}


SIGNATURES = {"type": ["array", "null"], "items": {
    "type": "object", "required": ["commit", "result", "signer"],
    "properties": {"commit": STRING, "result": enum(("signed", "unsigned", "bad")), "signer": STRING}}}
REF_UPDATE = Shape("RefUpdate", {"ref": Out(STRING), "old": Out(STRING), "new": Out(STRING),
                                 "rules": Out(NULLABLE_STRING, "the rule-set id that judged this update "
                                              "(docs/ref-rules.md); null: no rule list was in force"),
                                 "signatures": Out(SIGNATURES, "under require_signed, each new commit's "
                                                   "signature: signed (by signer), unsigned or bad; null: not "
                                                   "checked", value=lambda u: json.loads(u.signatures)
                                                   if u.signatures else None)})
PUSH = Shape("Push", {
    "id": Out(INTEGER), "user": Out(NULLABLE_STRING, given=True), "key_fingerprint": Out(STRING),
    "protocol": Out(STRING),
    "client_address": Out(NULLABLE_STRING, "where the push came from; null unless the caller "
                          "administers the repository's tenant", given=True),
    "state": Out(enum(models.PUSH_STATES),
                 "done: recorded by the push itself; recovered: recorded by the reconciler (the pusher "
                 "or the server died before the push was done, or the ref was written outside a push); "
                 "pending: its refs are being moved; failed: no ref moved"),
    "created_at": Out(DATETIME),
    "push_options": Out(STRINGS, "git push -o options as given (docs/compatibility.md), with ci.variable "
                        "values shown as *** (docs/webhooks.md)",
                        value=lambda push: push_options.shown(json.loads(push.push_options or "[]"))),
    "ref_updates": each(REF_UPDATE, "ref_updates", inline=True),
    "certificate": Out(PUSH_CERTIFICATE, "the SSH certificate the push was made with "
                       "(docs/certificates.md); null for a plain key")})


def push_json(push: models.Push, user_names: dict[int, str], show_address: bool = False) -> dict[str, Any]:
    """``show_address``: the pusher's network address is personal data, shown only to the
    admins of the repository's tenant (a public repository's audit is readable by anyone)."""
    return PUSH.render(push, user=user_names.get(push.user_id) if push.user_id else None,
                       client_address=push.client_address if show_address else None)


def _admin_repo(session: Session, principal: access.Principal, tenant: str, repo: str) -> models.Repository:
    """The repository, for its admins only (:func:`visible_repo` with ``need`` admin)."""
    return visible_repo(session, principal, tenant, repo, need=access.ADMIN)


class Repos(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": NAME_FIELD,
              "description": DESCRIPTION_FIELD,
              "visibility": Field(str, choices=models.VISIBILITIES, description=VISIBILITY_DESCRIPTION),
              "builds_enabled": Field(bool)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            data = read_json(req, self.FIELDS)
            repo = oncreate.create_repository(session, self.ctx.runtime.store, row, data["name"],
                                              data.get("description", ""), data.get("visibility", "private"))
            if data.get("builds_enabled"):
                repos.update_repo(session, repo, builds_enabled=True)
            resp.media = repo_json(repo, self.ctx.config, repo_size(self.ctx.runtime.store, repo))
        created(resp, repo_path(tenant, repo.name))

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            resp.media = page(session, access.readable_repos(principal, row.id), models.Repository.id, req,
                              serialize=lambda r: repo_json(r, self.ctx.config))


class Repo(Resource):
    PATCH_FIELDS: ClassVar[Mapping[str, Field]] = {"description": DESCRIPTION_FIELD,
                    "visibility": Field(str, choices=models.VISIBILITIES, description=VISIBILITY_DESCRIPTION),
                    "builds_enabled": Field(bool, description="run .gitserver/pipeline.toml builds on push"),
                    "quota_bytes": quota_field("the tenant's admins"),
                    "default_branch": Field(str, max_length=255, description="an existing branch; becomes HEAD")}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            resp.media = repo_json(row, self.ctx.config, repo_size(self.ctx.runtime.store, row))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _admin_repo(session, principal, tenant, repo)
            data = read_json(req, self.PATCH_FIELDS)
            if "quota_bytes" in data:
                repos.set_repo_quota(session, principal, row, data["quota_bytes"])
            repos.update_repo(session, row, self.ctx.runtime.store, description=data.get("description"),
                              visibility=data.get("visibility"), builds_enabled=data.get("builds_enabled"),
                              default_branch=data.get("default_branch"))
            resp.media = repo_json(row, self.ctx.config, repo_size(self.ctx.runtime.store, row))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        # Look it up first: a hidden repository must still answer 404, like a missing one.
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            visible_repo(session, principal, tenant, repo)
        resp.set_header("Allow", "GET, PATCH")
        raise PolicyRefused(DELETE_REFUSED)


class Grants(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _admin_repo(session, principal, tenant, repo)
            resp.media = page(session, grants.grants_query(row), models.Grant.id, req,
                              serialize=lambda g: grant_json(session, g))


class _Grant(Resource):
    """PUT/GET/DELETE of one grant; subclasses say whether the grantee is a user or a group.
    Falcon passes the grantee's name by its route field (``user`` or ``group``)."""

    FIELDS: ClassVar[Mapping[str, Field]] = {"permission": Field(str, required=True, choices=models.PERMISSIONS)}

    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _target(self, session: Session, principal: access.Principal, tenant: str,
                repo: str, named: dict[str, str]) -> tuple[access.Granted, dict[str, Any]]:
        (name,) = named.values()
        granted = access.authorise(session, principal, tenant, repo, access.ADMIN)
        return granted, self.grantee(session, granted.repo, name)

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, **named: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, named)
            resp.media = grant_json(session, grants.get_grant(session, granted.repo, **who))

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, **named: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, named)
            row = granted.repo
            permission = read_json(req, self.FIELDS)["permission"]
            rules.check_grantable(granted.permission, permission)
            existed = session.scalar(select(models.Grant.id).where(*self._match(row, who))) is not None
            grant = grants.set_grant(session, row, permission, **who)
            resp.media = grant_json(session, grant)
        if not existed:
            resp.status = falcon.HTTP_201
            resp.location = req.path

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str, **named: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted, who = self._target(session, principal, tenant, repo, named)
            grants.remove_grant(session, granted.repo, **who)
        resp.status = falcon.HTTP_204

    @staticmethod
    def _match(repo: models.Repository, who: dict[str, Any]) -> list[Any]:
        if who.get("user") is not None:
            return [models.Grant.repo_id == repo.id, models.Grant.user_id == who["user"].id]
        return [models.Grant.repo_id == repo.id, models.Grant.group_id == who["group"].id]


class UserGrant(_Grant):
    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        return {"user": users.get_user(session, repo.tenant, name)}


class GroupGrant(_Grant):
    def grantee(self, session: Session, repo: models.Repository, name: str) -> dict[str, Any]:
        return {"group": groups.get_group(session, repo.tenant, name)}


class DeployKeys(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"key": Field(str, required=True, max_length=16 * 1024),
              "title": Field(str, max_length=200),
              "write": Field(bool, description="default false: read-only")}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            granted = access.authorise(session, principal, tenant, repo, access.ADMIN)
            row = granted.repo
            data = read_json(req, self.FIELDS)
            write = data.get("write", False)
            if write:
                rules.check_grantable(granted.permission, access.WRITE)
            deploy = deploy_keys.add_deploy_key(session, row, data["key"], data.get("title", ""), write,
                                                expires_at=principal.token_expires_at)
            resp.media = deploy_key_json(deploy)
        created(resp, f"{repo_path(tenant, row.name)}/deploy-keys/{deploy.id}")

    on_get = listing(_admin_repo, deploy_keys.deploy_keys_query, models.DeployKey.id, deploy_key_json)


class DeployKey(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
               deploy_key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _admin_repo(session, principal, tenant, repo)
            resp.media = deploy_key_json(deploy_keys.get_deploy_key(session, row, deploy_key_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                  deploy_key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _admin_repo(session, principal, tenant, repo)
            deploy_keys.remove_deploy_key(session, deploy_keys.get_deploy_key(session, row, deploy_key_id))
        resp.status = falcon.HTTP_204


class Pushes(Resource):
    """The audit log, newest first; ``ref`` and ``user`` narrow it."""

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
                user = users.find_user(session, row.tenant, user_name) or False
            state = req.get_param("state") or None
            if state is not None and state not in (*models.PUSH_STATES, "all"):
                raise InvalidInput(f"state must be one of {', '.join(models.PUSH_STATES)} or all",
                                   field="state")
            result = page(session, audit.pushes_query(row, ref=ref, user=user, state=state),
                          models.Push.id, req,
                          descending=True)
            ids = {p.user_id for p in result["items"] if p.user_id}
            names = dict(session.execute(select(models.User.id, models.User.name)
                                         .where(models.User.id.in_(ids))).all()) if ids else {}
            show = principal.is_tenant_admin(row.tenant_id)
            resp.media = {"items": [push_json(p, names, show) for p in result["items"]], "next": result["next"]}


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((REPOS, Repos), (REPO, Repo), (GRANTS, Grants), (USER_GRANT, UserGrant),
                       (GROUP_GRANT, GroupGrant), (DEPLOY_KEYS, DeployKeys), (DEPLOY_KEY, DeployKey),
                       (PUSHES, Pushes)))


_DEPLOY_KEY_ID = oa.path_param("deploy_key_id", "deploy key id", ID_SCHEMA)
_NO_CONTENT = {"description": "Done"}

# The request bodies, documented from the Fields their handlers validate with.
REQUEST_BODIES = {"NewRepository": Repos.FIELDS, "RepositoryChange": Repo.PATCH_FIELDS,
                  "GrantChange": _Grant.FIELDS, "NewDeployKey": DeployKeys.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    **schemas(listed=(REPOSITORY, GRANT, DEPLOY_KEY_SHAPE, PUSH)),
}

_GRANT_RESPONSES = {200: ("Updated", GRANT.ref()),
                    201: ("Created; Location names it", GRANT.ref())}

OPENAPI_PATHS: dict[str, Any] = {
    REPOS: {
        "parameters": [TENANT_PARAM],
        "post": oa.create_op("createRepository", "Create a protected repository (tenant admins)", TAG,
                             REPOSITORY, "NewRepository"),
        "get": oa.list_op("listRepositories", "Repositories of a tenant the caller can read", TAG,
                          "repositories", REPOSITORY, errors=(400, 401, 404)),
    },
    REPO: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("getRepository", "One repository", TAG, {200: ("The repository", REPOSITORY.ref())},
                     errors=(401, 403, 404)),
        "patch": oa.op("updateRepository", "Change description, visibility or builds (repository admins)",
                       TAG, {200: ("The changed repository", REPOSITORY.ref())},
                       body=oa.json_body(oa.ref("RepositoryChange"))),
        "delete": oa.op("deleteRepository", "Always refused: history is protected", TAG, {},
                        errors=(401, 403, 404, 405)),
    },
    GRANTS: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.list_op("listGrants", "Grants on a repository (repository admins)", TAG, "grants", GRANT),
    },
    USER_GRANT: {
        "parameters": [TENANT_PARAM, REPO_PARAM, USER_PARAM],
        "get": oa.op("getUserGrant", "A user's grant", TAG, {200: ("The grant", GRANT.ref())},
                     errors=(401, 403, 404)),
        "put": oa.op("setUserGrant", "Give a user read, write or admin (at most what the caller holds)", TAG,
                     _GRANT_RESPONSES, body=oa.json_body(oa.ref("GrantChange"))),
        "delete": oa.op("removeUserGrant", "Take a user's grant away", TAG, {204: _NO_CONTENT},
                        errors=(401, 403, 404)),
    },
    GROUP_GRANT: {
        "parameters": [TENANT_PARAM, REPO_PARAM, GROUP_PARAM],
        "get": oa.op("getGroupGrant", "A group's grant", TAG, {200: ("The grant", GRANT.ref())},
                     errors=(401, 403, 404)),
        "put": oa.op("setGroupGrant", "Give a group read, write or admin (at most what the caller holds)",
                     TAG, _GRANT_RESPONSES, body=oa.json_body(oa.ref("GrantChange"))),
        "delete": oa.op("removeGroupGrant", "Take a group's grant away", TAG, {204: _NO_CONTENT},
                        errors=(401, 403, 404)),
    },
    DEPLOY_KEYS: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "post": oa.create_op("addDeployKey", "Add a deploy key (read-only unless write is true)", TAG,
                             DEPLOY_KEY_SHAPE, "NewDeployKey", done="Added"),
        "get": oa.list_op("listDeployKeys", "Deploy keys of a repository", TAG, "deploy keys", DEPLOY_KEY_SHAPE),
    },
    oa.openapi_path(DEPLOY_KEY): {
        "parameters": [TENANT_PARAM, REPO_PARAM, _DEPLOY_KEY_ID],
        "get": oa.op("getDeployKey", "One deploy key", TAG, {200: ("The deploy key", DEPLOY_KEY_SHAPE.ref())},
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
