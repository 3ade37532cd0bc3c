"""Users of a tenant, their SSH keys and their API tokens.

Who may do what (the ``check_*`` rules in :mod:`gitserver.admin.rules`): members of a tenant see its
users; its admins create, change and disable them, but only site admins give or touch the
site-admin role. Users manage their own keys and tokens; admins manage those of the users they
manage. A token never mints a token with more scopes than it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy.orm import Session

from gitserver import shapes
from gitserver.admin import keys, minting, rules, signing, tokens, users
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created, listing
from gitserver.api.lookup import visible_tenant
from gitserver.api.paths import ID_CONVERTER, ID_SCHEMA, TENANT, TENANT_PARAM, USER, USER_PARAM
from gitserver.api.response import schemas
from gitserver.api.shapes import EMAILS_FIELD, NAME_FIELD
from gitserver.db import models
from gitserver.identity.keys import MAX_BATCH_KEYS
from gitserver.jsonshape import BOOLEAN, INTEGER, NULLABLE_STRING, STRING, Out, Shape, each
from gitserver.policy import access
from gitserver.shapes import created_token_json, key_json, token_json, user_json

USERS = f"{TENANT}/users"
KEYS = f"{USER}/keys"
KEY = f"{KEYS}/{{key_id:{ID_CONVERTER}}}"
# A literal segment: falcon prefers it to the {key_id} field, which only takes integers anyway.
KEYS_BATCH = f"{KEYS}/batch"
# 100,000 RSA-4096 lines are ~75 MB; ed25519 lines ~10 MB. A batch body may be this large.
BATCH_BODY_BYTES = 64 * 1024 * 1024
TOKENS = f"{USER}/tokens"
TOKEN = f"{TOKENS}/{{token_id:{ID_CONVERTER}}}"
TAG = "users"

REFUSED_LINE = Shape("RefusedKeyLine", {
    "line": Out(INTEGER, "1-based index into keys"), "reason": Out(STRING, attr="problem"),
    "fingerprint": Out(NULLABLE_STRING, value=lambda k: k.key.fingerprint if k.key is not None else None)})
KEY_IMPORT = Shape("KeyImport", {
    "imported": Out(BOOLEAN, "false: a line was refused and nothing was added"), "added": Out(INTEGER),
    "total": Out(INTEGER, "key lines in the batch"), "refused": each(REFUSED_LINE, "refused", inline=True)})


def user_path(tenant: str, user: str) -> str:
    return f"/api/v1/tenants/{tenant}/users/{user}"


def _user(session: Session, principal: access.Principal, tenant: str, user: str) -> models.User:
    """A user of a tenant the principal can see (404 for hidden tenants and missing users)."""
    return users.get_user(session, visible_tenant(session, principal, tenant), user)


def _self_or_managed_user(session: Session, principal: access.Principal, tenant: str,
                          user: str) -> models.User:
    """A user whose keys and tokens the principal may see: itself, or one it administers."""
    row = _user(session, principal, tenant, user)
    rules.check_self_or_manager(principal, row.id, row.tenant_id, row.role)
    return row


def _managed_user(session: Session, principal: access.Principal, tenant: str, user: str,
                  *, self_service: bool = False) -> models.User:
    """A user the principal may change: itself (for keys and tokens), or as its admin."""
    if self_service:
        row = _self_or_managed_user(session, principal, tenant, user)
    else:
        row = _user(session, principal, tenant, user)
        rules.check_user_manageable(principal, row.tenant_id, row.role)
    access.require_scope(principal, access.ADMIN)
    return row


class Users(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": NAME_FIELD, "role": Field(str, choices=models.ROLES)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            data = read_json(req, self.FIELDS)
            role = data.get("role", models.ROLE_MEMBER)
            rules.check_role_assignable(principal, role)
            user = users.create_user(session, row, data["name"], role)
            resp.media = user_json(user)
        created(resp, user_path(tenant, user.name))

    on_get = listing(visible_tenant, users.users_query, models.User.id, user_json)


class User(Resource):
    PATCH_FIELDS: ClassVar[Mapping[str, Field]] = {"role": Field(str, choices=models.ROLES), "disabled": Field(bool),
                                                   "emails": EMAILS_FIELD}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            resp.media = user_json(_user(session, principal, tenant, user))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _managed_user(session, principal, tenant, user)
            data = read_json(req, self.PATCH_FIELDS)
            if "role" in data:
                rules.check_role_assignable(principal, data["role"])
            users.update_user(session, row, role=data.get("role"), disabled=data.get("disabled"))
            if "emails" in data:  # who may sign commits (docs/ref-rules.md)
                signing.set_emails(session, row, data["emails"])
            resp.media = user_json(row)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        """Disable, never delete: pushes keep their author, and the name cannot be reused by
        someone else inheriting the old user's grants."""
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            users.disable_user(session, _managed_user(session, principal, tenant, user))
        resp.status = falcon.HTTP_204


class Keys(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "key": Field(str, required=True, max_length=16 * 1024,
                     description="one OpenSSH public key line (ed25519, ECDSA or RSA ≥ 2048 bits)"),
        "title": Field(str, max_length=200)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _managed_user(session, principal, tenant, user, self_service=True)
            data = read_json(req, self.FIELDS)
            key = keys.add_user_key(session, row, data["key"], data.get("title", ""),
                                    expires_at=principal.token_expires_at)
            resp.media = key_json(key)
        created(resp, f"{user_path(tenant, user)}/keys/{key.id}")

    on_get = listing(_self_or_managed_user, keys.user_keys_query, models.PublicKey.id, key_json)


def key_import_json(report: keys.KeyImport) -> dict[str, Any]:
    return KEY_IMPORT.render(report)


class KeysBatch(Resource):
    """POST an ``authorized_keys`` file's lines: every key added in one transaction, or, when
    a line is refused, none (unless ``skip_refused``), with a report naming each refused line."""

    FIELDS: ClassVar[Mapping[str, Field]] = {
        "keys": Field(list, required=True, items=str, max_length=MAX_BATCH_KEYS,
                      description="the lines of an authorized_keys file: one OpenSSH public key each (its "
                                  "comment becomes the title); blank lines and # comments are skipped; a line "
                                  "that is no acceptable key is refused in the report, not the body"),
        "skip_refused": Field(bool, description="add the acceptable keys even when some lines are refused",
                              doc={"default": False})}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _managed_user(session, principal, tenant, user, self_service=True)
            data = read_json(req, self.FIELDS, limit=BATCH_BODY_BYTES)
            report = keys.import_user_keys(session, row, data["keys"],
                                           skip_refused=data.get("skip_refused", False),
                                           expires_at=principal.token_expires_at)
        body = key_import_json(report)
        if report.imported:
            resp.status = falcon.HTTP_201 if report.added else falcon.HTTP_200
        else:
            resp.status = falcon.HTTP_422
            body = {"title": "Unprocessable Content",
                    "description": f"{len(report.refused)} of {report.total} keys refused; nothing was "
                                   "imported (send skip_refused to import the others)", **body}
        resp.media = body


@dataclasses.dataclass(frozen=True)
class _ItemKind:
    """How to find, show and remove one kind of a user's items."""

    find: Callable[[Session, models.User, int], Any]
    show: Callable[[Any], dict[str, Any]]
    remove: Callable[[Session, Any], None]


class _UserItem(Resource):
    """One of a user's keys or tokens, by the id falcon passes (``key_id``, ``token_id``): the
    user and its admins read it; the user and its admins remove it (self-service)."""

    KIND: ClassVar[_ItemKind]

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, **named: int) -> None:
        (item_id,) = named.values()
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _self_or_managed_user(session, principal, tenant, user)
            resp.media = self.KIND.show(self.KIND.find(session, row, item_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, **named: int) -> None:
        (item_id,) = named.values()
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _managed_user(session, principal, tenant, user, self_service=True)
            self.KIND.remove(session, self.KIND.find(session, row, item_id))
        resp.status = falcon.HTTP_204


class Key(_UserItem):
    KIND = _ItemKind(find=keys.get_user_key, show=key_json, remove=keys.remove_user_key)


class Tokens(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "name": Field(str, max_length=200),
        # Refused empty by admin.minting ("scopes must not be empty").
        "scopes": Field(list, items=str, choices=tokens.TOKEN_SCOPES, max_length=3, doc={"minItems": 1},
                        description="default: the scopes of the token used to create it"),
        "expires_at": Field(str, nullable=True, max_length=64, doc={"format": "date-time"},
                            description="in the future; none means no expiry")}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _managed_user(session, principal, tenant, user, self_service=True)
            data = read_json(req, self.FIELDS, allow_empty=True)
            token, secret = minting.mint_token(session, principal, row, name=data.get("name", ""),
                                               scopes=data.get("scopes"), expires=data.get("expires_at"))
            resp.media = created_token_json(token, secret)
        created(resp, f"{user_path(tenant, user)}/tokens/{token.id}")

    on_get = listing(_self_or_managed_user, tokens.tokens_query, models.ApiToken.id, token_json)


class Token(_UserItem):
    # Removing a token revokes it: it answers 401 from the next request on.
    KIND = _ItemKind(find=tokens.get_token, show=token_json, remove=tokens.revoke_token)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((USERS, Users), (USER, User), (KEYS, Keys), (KEY, Key), (KEYS_BATCH, KeysBatch),
                       (TOKENS, Tokens), (TOKEN, Token)))


_KEY_ID = oa.path_param("key_id", "key id", ID_SCHEMA)
_TOKEN_ID = oa.path_param("token_id", "token id", ID_SCHEMA)
_NO_CONTENT = {"description": "Done"}

# The request bodies, documented from the Fields their handlers validate with.
REQUEST_BODIES = {"NewUser": Users.FIELDS, "UserChange": User.PATCH_FIELDS, "NewKey": Keys.FIELDS,
                  "KeyBatch": KeysBatch.FIELDS, "NewToken": Tokens.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    **schemas(KEY_IMPORT, shapes.CREATED_TOKEN, listed=(shapes.USER, shapes.KEY, shapes.TOKEN)),
}

OPENAPI_PATHS: dict[str, Any] = {
    USERS: {
        "parameters": [TENANT_PARAM],
        "post": oa.create_op("createUser", "Create a user (tenant admins; site-admin role: site admins)", TAG,
                             shapes.USER, "NewUser"),
        "get": oa.list_op("listUsers", "Users of a tenant", TAG, "users", shapes.USER, errors=(400, 401, 404)),
    },
    USER: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "get": oa.op("getUser", "One user", TAG, {200: ("The user", shapes.USER.ref())}, errors=(401, 404)),
        "patch": oa.op("updateUser", "Change a user's role or re-enable it", TAG,
                       {200: ("The changed user", shapes.USER.ref())},
                       body=oa.json_body(oa.ref("UserChange"))),
        "delete": oa.op("disableUser", "Disable a user: its keys and tokens stop working at once", TAG,
                        {204: _NO_CONTENT}, errors=(401, 403, 404)),
    },
    KEYS: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "post": oa.create_op("addKey", "Add an SSH public key (409 when registered anywhere already)", TAG,
                             shapes.KEY, "NewKey", done="Added"),
        "get": oa.list_op("listKeys", "A user's SSH keys", TAG, "keys", shapes.KEY),
    },
    KEYS_BATCH: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "post": oa.op(
            "importKeys", "Add many SSH keys at once (an authorized_keys file), all or nothing", TAG,
            {201: ("Keys added (with skip_refused, the refused lines are listed)", KEY_IMPORT.ref()),
             200: ("No key line in the batch, or every line refused with skip_refused", KEY_IMPORT.ref()),
             422: ("A line was refused; nothing was added. Each refused line is listed",
                   KEY_IMPORT.ref())},
            errors=(400, 401, 403, 404, 409), body=oa.json_body(oa.ref("KeyBatch")),
            description="One transaction and one multi-row INSERT: 10,000 keys take well under "
                        "two seconds. A key already registered anywhere, a malformed line or a key "
                        "given twice is refused with its line number."),
    },
    oa.openapi_path(KEY): {
        "parameters": [TENANT_PARAM, USER_PARAM, _KEY_ID],
        "get": oa.op("getKey", "One SSH key", TAG, {200: ("The key", shapes.KEY.ref())}, errors=(401, 403, 404)),
        "delete": oa.op("deleteKey", "Remove an SSH key; it stops working at the next connection", TAG,
                        {204: _NO_CONTENT}, errors=(401, 403, 404)),
    },
    TOKENS: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "post": oa.op("createToken", "Create an API token; the secret is in this response only", TAG,
                      {201: ("Created; Location names it", shapes.CREATED_TOKEN.ref())},
                      body=oa.json_body(oa.ref("NewToken"), required=False)),
        "get": oa.list_op("listTokens", "A user's API tokens, without secrets", TAG, "tokens", shapes.TOKEN),
    },
    oa.openapi_path(TOKEN): {
        "parameters": [TENANT_PARAM, USER_PARAM, _TOKEN_ID],
        "get": oa.op("getToken", "One API token, without its secret", TAG, {200: ("The token", shapes.TOKEN.ref())},
                     errors=(401, 403, 404)),
        "delete": oa.op("revokeToken", "Revoke an API token, at once", TAG, {204: _NO_CONTENT},
                        errors=(401, 403, 404)),
    },
}
