"""SSH certificates over the API (docs/certificates.md): a tenant's trusted user CAs
(tenant admins), their revocations by serial or key id, and users' principal records.

Principal records are made and removed only by the admins of the user's tenant: a principal is
an identity, and a user who could name their own would log in as whoever a CA certifies under
that name. Users may read their own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy.orm import Session

from gitserver.admin import rules, ssh_cas, users
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created, listing
from gitserver.api.lookup import visible_tenant
from gitserver.api.paths import ID_CONVERTER, ID_SCHEMA, TENANT, TENANT_PARAM, USER, USER_PARAM
from gitserver.api.response import schemas
from gitserver.db import models
from gitserver.identity import certs
from gitserver.jsonshape import DATETIME, INTEGER, NULLABLE_INTEGER, NULLABLE_STRING, STRING, Out, Shape
from gitserver.policy import access

CAS = f"{TENANT}/ssh-cas"
CA = f"{CAS}/{{ca_id:{ID_CONVERTER}}}"
REVOKED = f"{CA}/revoked"
PRINCIPALS = f"{USER}/principals"
PRINCIPAL = f"{PRINCIPALS}/{{principal}}"
TAG = "ssh-certificates"

CA_SHAPE = Shape("SshCa", {
    "id": Out(INTEGER), "tenant": Out(STRING, value=lambda ca: ca.tenant.name),
    "fingerprint": Out(STRING, "the CA key's SHA256 fingerprint"),
    "key": Out(STRING, "the CA's public key (OpenSSH one-line form)", attr="key_data"),
    "title": Out(STRING), "created_at": Out(DATETIME)})
REVOCATION_SHAPE = Shape("SshCaRevocation", {
    "id": Out(INTEGER), "ca_id": Out(INTEGER),
    "serial": Out(NULLABLE_INTEGER, "the revoked serial, or null when a key id is revoked",
                  value=lambda row: None if row.serial is None else int(row.serial)),
    "key_id": Out(NULLABLE_STRING, "the revoked key id, or null when a serial is revoked"),
    "created_at": Out(DATETIME)})
PRINCIPAL_SHAPE = Shape("SshPrincipal", {
    "principal": Out(STRING), "user": Out(STRING, value=lambda row: row.user.name),
    "tenant": Out(STRING, value=lambda row: row.user.tenant.name), "created_at": Out(DATETIME)})

PRINCIPAL_FIELD = Field(str, required=True, check=certs.validate_principal,
                        doc={"pattern": certs.PRINCIPAL_RE.pattern, "maxLength": 255},
                        description="a certificate principal, matched exactly")


def _admin_tenant(session: Session, principal: access.Principal, tenant: str) -> models.Tenant:
    return visible_tenant(session, principal, tenant, admin=True)


def _ca(session: Session, principal: access.Principal, tenant: str, ca_id: int) -> models.SshCa:
    """One of the tenant's CAs, for its admins."""
    return ssh_cas.get_ca(session, _admin_tenant(session, principal, tenant), ca_id)


def _user(session: Session, principal: access.Principal, tenant: str, user: str, *,
          manage: bool) -> models.User:
    """The user whose principals are read (itself, or as its admin) or changed (its admins)."""
    row = users.get_user(session, visible_tenant(session, principal, tenant), user)
    if manage:
        rules.check_user_manageable(principal, row.tenant_id, row.role)
        access.require_scope(principal, access.ADMIN)
    else:
        rules.check_self_or_manager(principal, row.id, row.tenant_id, row.role)
    return row


class Cas(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "key": Field(str, required=True, description="the CA's public key, one OpenSSH line (its .pub)"),
        "title": Field(str, max_length=ssh_cas.MAX_TITLE)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            data = read_json(req, self.FIELDS)
            row = ssh_cas.add_ca(session, _admin_tenant(session, principal, tenant), data["key"],
                                 data.get("title", ""))
            resp.media = CA_SHAPE.render(row)
        created(resp, f"{paths.tenant_path(tenant)}/ssh-cas/{row.id}")

    on_get = listing(_admin_tenant, ssh_cas.cas_query, models.SshCa.id, CA_SHAPE.render)


class Ca(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, ca_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            resp.media = CA_SHAPE.render(_ca(session, principal, tenant, ca_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, ca_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            ssh_cas.remove_ca(session, _ca(session, principal, tenant, ca_id))
        resp.status = falcon.HTTP_204


class Revoked(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {
        "serial": Field(int, description="revoke the CA's certificates with this serial (1 to 2^64-1)",
                        doc={"minimum": 1, "maximum": certs.MAX_SERIAL}),
        "key_id": Field(str, max_length=certs.MAX_KEY_ID, description="revoke the CA's certificates with this key id")}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, ca_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            data = read_json(req, self.FIELDS)
            ca = _ca(session, principal, tenant, ca_id)
            row = ssh_cas.revoke(session, ca, serial=data.get("serial"), key_id=data.get("key_id"))
            resp.media = REVOCATION_SHAPE.render(row)
        resp.status = falcon.HTTP_201

    on_get = listing(_ca, ssh_cas.revocations_query, models.SshCaRevocation.id, REVOCATION_SHAPE.render)


class Principals(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"principal": PRINCIPAL_FIELD}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _user(session, principal, tenant, user, manage=True)
            data = read_json(req, self.FIELDS)
            record = ssh_cas.add_principal(session, row, data["principal"])
            resp.media = PRINCIPAL_SHAPE.render(record)
        resp.status = falcon.HTTP_201

    on_get = listing(functools.partial(_user, manage=False), ssh_cas.principals_query, models.SshPrincipal.id,
                     PRINCIPAL_SHAPE.render)


class Principal(Resource):
    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, user: str,
                  principal: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, caller):
            row = _user(session, caller, tenant, user, manage=True)
            ssh_cas.remove_principal(session, ssh_cas.get_principal(session, row, principal))
        resp.status = falcon.HTTP_204


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((CAS, Cas), (CA, Ca), (REVOKED, Revoked), (PRINCIPALS, Principals),
                           (PRINCIPAL, Principal)))


REQUEST_BODIES = {"NewSshCa": Cas.FIELDS, "NewSshRevocation": Revoked.FIELDS, "NewSshPrincipal": Principals.FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **schemas(listed=(CA_SHAPE, REVOCATION_SHAPE, PRINCIPAL_SHAPE)), **request_schemas(REQUEST_BODIES)}

_CA_ID = oa.path_param("ca_id", "SSH CA id", ID_SCHEMA)
_PRINCIPAL = oa.path_param("principal", "the principal", {"type": "string", "maxLength": 255})
_DONE = {"description": "Done"}

OPENAPI_PATHS: dict[str, Any] = {
    CAS: {
        "parameters": [TENANT_PARAM],
        "post": oa.create_op("addSshCa", "Trust a user CA for the tenant (tenant admins)", TAG, CA_SHAPE, "NewSshCa",
                             done="Trusted"),
        "get": oa.list_op("listSshCas", "The tenant's trusted user CAs (tenant admins)", TAG, "CAs", CA_SHAPE),
    },
    oa.openapi_path(CA): {
        "parameters": [TENANT_PARAM, _CA_ID],
        "get": oa.op("getSshCa", "One trusted user CA", TAG, {200: ("The CA", CA_SHAPE.ref())},
                     errors=(401, 403, 404)),
        "delete": oa.op("deleteSshCa", "Stop trusting a CA; its certificates fail at the next login "
                        "or command", TAG, {204: _DONE}, errors=(401, 403, 404)),
    },
    oa.openapi_path(REVOKED): {
        "parameters": [TENANT_PARAM, _CA_ID],
        "post": oa.op("revokeSshCertificates", "Revoke the CA's certificates by serial or key id "
                      "(exactly one)", TAG, {201: ("Revoked", REVOCATION_SHAPE.ref())},
                      errors=(400, 401, 403, 404, 409), body=oa.json_body(oa.ref("NewSshRevocation"))),
        "get": oa.list_op("listSshRevocations", "The CA's revocations", TAG, "revocations", REVOCATION_SHAPE),
    },
    PRINCIPALS: {
        "parameters": [TENANT_PARAM, USER_PARAM],
        "post": oa.op("addSshPrincipal", "Say which certificate principal names this user (its "
                      "tenant's admins; unique site-wide)", TAG,
                      {201: ("Added", PRINCIPAL_SHAPE.ref())}, errors=(400, 401, 403, 404, 409),
                      body=oa.json_body(oa.ref("NewSshPrincipal"))),
        "get": oa.list_op("listSshPrincipals", "The user's principal records (the user, or its admins)", TAG,
                          "principals", PRINCIPAL_SHAPE),
    },
    PRINCIPAL: {
        "parameters": [TENANT_PARAM, USER_PARAM, _PRINCIPAL],
        "delete": oa.op("deleteSshPrincipal", "Remove a principal record; certificates naming it stop "
                        "logging in as the user", TAG, {204: _DONE}, errors=(401, 403, 404)),
    },
}
