"""``/api/v1/tenants``: site admins create tenants; everyone else sees only their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon

from gitserver import admin
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated, require_scope
from gitserver.api.body import Field, read_json
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_tenant
from gitserver.api.paging import OPENAPI_PARAMETERS, list_schema, page
from gitserver.db import models
from gitserver.errors import Forbidden
from gitserver.names import NAME_PATTERN, validate_name

API = "/api/v1"
TENANTS = f"{API}/tenants"
TENANT = f"{TENANTS}/{{tenant}}"
TAG = "tenants"

NAME_SCHEMA = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 100}
DESCRIPTION_SCHEMA = {"type": "string", "maxLength": 2000}
DESCRIPTION_FIELD = Field(str, max_length=2000)


def tenant_path(tenant: str) -> str:
    return f"{TENANTS}/{tenant}"


def tenant_json(tenant: models.Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "description": tenant.description,
            "created_at": tenant.created_at}


class Tenants:
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": Field(str, required=True, check=validate_name),
                                             "description": DESCRIPTION_FIELD}

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            if not principal.is_site_admin:
                raise Forbidden("only site admins can create tenants")
            require_scope(principal, "admin")
            data = read_json(req, self.FIELDS)
            tenant = admin.create_tenant(session, data["name"], data.get("description", ""))
            resp.media = tenant_json(tenant)
        resp.status = falcon.HTTP_201
        resp.location = tenant_path(tenant.name)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            # Everyone but a site admin sees exactly one tenant: their own.
            only = None if principal.is_site_admin else (principal.tenant_id or -1)
            resp.media = page(session, admin.tenants_query(only), models.Tenant.id, req,
                              serialize=tenant_json)


class Tenant:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            resp.media = tenant_json(visible_tenant(session, principal, tenant))


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(TENANTS, Tenants(ctx))
    app.add_route(TENANT, Tenant(ctx))


TENANT_PARAM = oa.path_param("tenant", "tenant name", NAME_SCHEMA)

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Tenant": {
        "type": "object", "required": ["id", "name", "description", "created_at"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "description": {"type": "string"},
                       "created_at": {"type": "string", "format": "date-time"}},
    },
    "TenantList": list_schema("#/components/schemas/Tenant"),
    "NewTenant": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": NAME_SCHEMA, "description": DESCRIPTION_SCHEMA},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    TENANTS: {
        "post": oa.op("createTenant", "Create a tenant (site admins)", TAG,
                      {201: ("Created; Location names it", oa.ref("Tenant"))},
                      errors=(400, 401, 403, 409), body=oa.json_body(oa.ref("NewTenant"))),
        "get": oa.op("listTenants", "Tenants the caller can see", TAG,
                     {200: ("A page of tenants", oa.ref("TenantList"))},
                     errors=(400, 401), parameters=OPENAPI_PARAMETERS),
    },
    TENANT: {
        "parameters": [TENANT_PARAM],
        "get": oa.op("getTenant", "One tenant", TAG, {200: ("The tenant", oa.ref("Tenant"))},
                     errors=(401, 404)),
    },
}
