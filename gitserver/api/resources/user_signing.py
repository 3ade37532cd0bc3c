"""Who may sign commits, over HTTP (docs/ref-rules.md): a user's emails
(``…/users/{u}/emails``, also settable with ``PATCH …/users/{u}`` ``{"emails": […]}``), signing-only
SSH keys (``…/users/{u}/signing-keys``) and GPG keys (``…/users/{u}/gpg-keys``).

Admins set emails (a commit's committer email decides whose keys may sign it, so a user must
not choose theirs); users add and remove their own signing keys, as they do their SSH keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy.orm import Session

from gitserver.admin import signing, users
from gitserver.admin.rules import check_self_or_manager, check_user_manageable
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created
from gitserver.api.lookup import visible_tenant
from gitserver.api.paging import page
from gitserver.api.paths import ID_CONVERTER, ID_SCHEMA, TENANT_PARAM, USER, USER_PARAM
from gitserver.api.response import schemas
from gitserver.api.shapes import EMAILS_FIELD
from gitserver.db import models
from gitserver.db.refrule_models import KEY_GPG, KEY_SSH, SIGNING_KEY_KINDS, SigningKey
from gitserver.jsonshape import DATETIME, INTEGER, STRING, STRINGS, Out, Shape, enum
from gitserver.policy import access

EMAILS = f"{USER}/emails"
SIGNING_KEYS = f"{USER}/signing-keys"
SIGNING_KEY = f"{SIGNING_KEYS}/{{signing_key_id:{ID_CONVERTER}}}"
GPG_KEYS = f"{USER}/gpg-keys"
GPG_KEY = f"{GPG_KEYS}/{{gpg_key_id:{ID_CONVERTER}}}"
TAG = "users"

EMAILS_SHAPE = Shape("UserEmails", {"emails": Out(STRINGS, given=True)})
SIGNING_KEY_SHAPE = Shape("UserSigningKey", {
    "id": Out(INTEGER), "kind": Out(enum(SIGNING_KEY_KINDS)), "fingerprint": Out(STRING),
    "key": Out(STRING, "the OpenSSH public key, or the armored GPG key", attr="key_data"),
    "title": Out(STRING), "created_at": Out(DATETIME)})


def _user(session: Session, principal: access.Principal, tenant: str, user: str, *,
          manage: bool = False, self_service: bool = False) -> models.User:
    """A user the principal may read (itself or one it manages), or change (``manage``)."""
    row = users.get_user(session, visible_tenant(session, principal, tenant), user)
    if manage and not self_service:
        check_user_manageable(principal, row.tenant_id, row.role)
    else:
        check_self_or_manager(principal, row.id, row.tenant_id, row.role)
    if manage:
        access.require_scope(principal, access.ADMIN)
    return row


def emails_json(session: Session, user: models.User) -> dict[str, Any]:
    return EMAILS_SHAPE.render(emails=signing.emails_of(session, user))


class Emails(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"emails": Field(list, required=True, items=EMAILS_FIELD.items,
                                                             max_length=EMAILS_FIELD.max_length)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            resp.media = emails_json(session, _user(session, principal, tenant, user))

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user, manage=True)
            signing.set_emails(session, row, read_json(req, self.FIELDS)["emails"])
            resp.media = emails_json(session, row)


class _Keys(Resource):
    """A user's signing keys of one kind."""

    KIND: ClassVar[str]
    FIELDS: ClassVar[Mapping[str, Field]]

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user, manage=True, self_service=True)
            data = read_json(req, self.FIELDS)
            add = signing.add_ssh_signing_key if self.KIND == KEY_SSH else signing.add_gpg_key
            key = add(session, row, data["key"], data.get("title", ""))
            resp.media = SIGNING_KEY_SHAPE.render(key)
        created(resp, f"{req.path.rstrip('/')}/{key.id}")

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user)
            resp.media = page(session, signing.signing_keys_query(row, self.KIND), SigningKey.id, req,
                              serialize=SIGNING_KEY_SHAPE.render)


class _Key(Resource):
    KIND: ClassVar[str]

    def get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user)
            resp.media = SIGNING_KEY_SHAPE.render(signing.get_signing_key(session, row, self.KIND, key_id))

    def delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, key_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user, manage=True, self_service=True)
            signing.remove_signing_key(session, signing.get_signing_key(session, row, self.KIND, key_id))
        resp.status = falcon.HTTP_204


class SshKeys(_Keys):
    KIND = KEY_SSH
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "key": Field(str, required=True, max_length=16 * 1024, description="one OpenSSH public key line"),
        "title": Field(str, max_length=200)}


class GpgKeys(_Keys):
    KIND = KEY_GPG
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "key": Field(str, required=True, max_length=signing.MAX_GPG_KEY_CHARS,
                     description="one armored OpenPGP public key (gpg --armor --export)"),
        "title": Field(str, max_length=200)}


class SshKey(_Key):
    KIND = KEY_SSH

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, signing_key_id: int) -> None:
        self.get(req, resp, tenant, user, signing_key_id)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str,
                  signing_key_id: int) -> None:
        self.delete(req, resp, tenant, user, signing_key_id)


class GpgKey(_Key):
    KIND = KEY_GPG

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, gpg_key_id: int) -> None:
        self.get(req, resp, tenant, user, gpg_key_id)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str, gpg_key_id: int) -> None:
        self.delete(req, resp, tenant, user, gpg_key_id)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((EMAILS, Emails), (SIGNING_KEYS, SshKeys), (SIGNING_KEY, SshKey),
                           (GPG_KEYS, GpgKeys), (GPG_KEY, GpgKey)))


SIGNING_KEY_PARAM = oa.path_param("signing_key_id", "signing-only SSH key id", ID_SCHEMA)
GPG_KEY_PARAM = oa.path_param("gpg_key_id", "GPG key id", ID_SCHEMA)
REQUEST_BODIES = {"UserEmailsChange": Emails.FIELDS, "NewSigningKey": SshKeys.FIELDS, "NewGpgKey": GpgKeys.FIELDS}
OPENAPI_SCHEMAS: dict[str, Any] = {**schemas(EMAILS_SHAPE, listed=(SIGNING_KEY_SHAPE,)),
                                   **request_schemas(REQUEST_BODIES)}


def _key_paths(kind: str, what: str, body: str) -> dict[str, Any]:
    name = "Gpg" if kind == KEY_GPG else "Signing"
    return {
        "list": {
            "parameters": [TENANT_PARAM, USER_PARAM],
            "post": oa.create_op(f"add{name}Key", f"Add a {what} (the user, or an admin)", TAG, SIGNING_KEY_SHAPE,
                                 body, done="Added"),
            "get": oa.list_op(f"list{name}Keys", f"A user's {what}s", TAG, "keys", SIGNING_KEY_SHAPE),
        },
        "one": {
            "parameters": [TENANT_PARAM, USER_PARAM, GPG_KEY_PARAM if kind == KEY_GPG else SIGNING_KEY_PARAM],
            "get": oa.op(f"get{name}Key", f"One {what}", TAG, {200: ("The key", SIGNING_KEY_SHAPE.ref())},
                         errors=(401, 403, 404)),
            "delete": oa.op(f"delete{name}Key", f"Remove a {what}", TAG, {204: {"description": "Removed"}},
                            errors=(401, 403, 404)),
        },
    }


_SSH = _key_paths(KEY_SSH, "signing-only SSH key", "NewSigningKey")
_GPG = _key_paths(KEY_GPG, "GPG key", "NewGpgKey")
OPENAPI_PATHS: dict[str, Any] = {
    EMAILS: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "get": oa.op("getUserEmails", "A user's emails (the user, or an admin)", TAG,
                     {200: ("The emails", EMAILS_SHAPE.ref())}, errors=(401, 403, 404)),
        "put": oa.op("setUserEmails", "Replace a user's emails (admins)", TAG,
                     {200: ("The emails", EMAILS_SHAPE.ref())}, errors=(400, 401, 403, 404, 409),
                     body=oa.json_body(oa.ref("UserEmailsChange"))),
    },
    SIGNING_KEYS: _SSH["list"], oa.openapi_path(SIGNING_KEY): _SSH["one"],
    GPG_KEYS: _GPG["list"], oa.openapi_path(GPG_KEY): _GPG["one"],
}
