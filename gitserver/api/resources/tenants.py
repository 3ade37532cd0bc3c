"""``/api/v1/tenants``: site admins create tenants; everyone else sees only their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon

from gitserver.admin import base, tenants
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created
from gitserver.api.lookup import visible_tenant
from gitserver.api.paging import page
from gitserver.api.paths import TENANT, TENANT_PARAM, TENANTS, tenant_path
from gitserver.api.response import schemas
from gitserver.api.shapes import DESCRIPTION_FIELD, NAME_FIELD, QUOTA, SIZE, quota_field, sized
from gitserver.config import Config
from gitserver.db import models
from gitserver.jsonshape import DATETIME, INTEGER, NULLABLE_STRING, STRING, Out, Shape
from gitserver.pipelines import logstore
from gitserver.policy import access
from gitserver.policy.errors import Forbidden
from gitserver.push import limits

TAG = "tenants"

TENANT_SHAPE = Shape("Tenant", {
    "id": Out(INTEGER), "name": Out(STRING), "description": Out(STRING), "quota_bytes": QUOTA,
    "create_template": Out(NULLABLE_STRING, value=lambda tenant: tenant.create_template or None),
    "created_at": Out(DATETIME), "size_bytes": SIZE})


def tenant_json(tenant: models.Tenant, size_bytes: int | None = None) -> dict[str, Any]:
    """``size_bytes`` (measured on disk) only when given: lists leave it out, it costs a walk."""
    return TENANT_SHAPE.render(tenant, **sized(size_bytes))


def tenant_size(config: Config, tenant: models.Tenant) -> int:
    """Bytes of all the tenant's repositories, as push quotas count them: on disk, and their
    pipeline logs."""
    return limits.tenant_usage(config.repos_dir / tenant.name) + logstore.tenant_stored_bytes(tenant)


class Tenants(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": NAME_FIELD, "description": DESCRIPTION_FIELD}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            if not principal.is_site_admin:
                raise Forbidden("only site admins can create tenants")
            access.require_scope(principal, access.ADMIN)
            data = read_json(req, self.FIELDS)
            tenant = tenants.create_tenant(session, data["name"], data.get("description", ""))
            resp.media = tenant_json(tenant, tenant_size(self.ctx.config, tenant))
        created(resp, tenant_path(tenant.name))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            # Everyone but a site admin sees exactly one tenant: their own.
            only = None if principal.is_site_admin else (principal.tenant_id or -1)
            resp.media = page(session, tenants.tenants_query(only), models.Tenant.id, req,
                              serialize=tenant_json)


class Tenant(Resource):
    # create_template: the repository whose pipeline file runs when a repository is created
    # in the tenant (docs/solum.md); null or "" removes it.
    PATCH_FIELDS: ClassVar[Mapping[str, Field]] = {
        "description": DESCRIPTION_FIELD,
        "quota_bytes": quota_field("site admins"),
        "create_template": Field(str, nullable=True, max_length=100,
                                 description="a repository of the tenant whose .gitserver/pipeline.toml runs "
                                             "(a create pipeline) whenever a repository is created; null removes it")}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            resp.media = tenant_json(row, tenant_size(self.ctx.config, row))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            data = read_json(req, self.PATCH_FIELDS)
            if "quota_bytes" in data:
                tenants.set_tenant_quota(session, principal, row, data["quota_bytes"])
            if "description" in data:
                row.description = base.validate_description(data["description"])
            if "create_template" in data:
                tenants.set_create_template(session, row, data["create_template"] or "")
            session.flush()
            resp.media = tenant_json(row, tenant_size(self.ctx.config, row))


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(TENANTS, Tenants(ctx))
    app.add_route(TENANT, Tenant(ctx))


# The request bodies, documented from the Fields their handlers validate with.
REQUEST_BODIES = {"NewTenant": Tenants.FIELDS, "TenantChange": Tenant.PATCH_FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {**schemas(listed=(TENANT_SHAPE,)), **request_schemas(REQUEST_BODIES)}

OPENAPI_PATHS: dict[str, Any] = {
    TENANTS: {
        "post": oa.create_op("createTenant", "Create a tenant (site admins)", TAG, TENANT_SHAPE, "NewTenant",
                             errors=(400, 401, 403, 409)),
        "get": oa.list_op("listTenants", "Tenants the caller can see", TAG, "tenants", TENANT_SHAPE, errors=(400, 401)),
    },
    TENANT: {
        "parameters": [TENANT_PARAM],
        "get": oa.op("getTenant", "One tenant", TAG, {200: ("The tenant", TENANT_SHAPE.ref())},
                     errors=(401, 404)),
        "patch": oa.op("updateTenant",
                       "Change description or create template (tenant admins) or quota (site admins)", TAG,
                       {200: ("The tenant", TENANT_SHAPE.ref())}, errors=(400, 401, 403, 404),
                       body=oa.json_body(oa.ref("TenantChange"))),
    },
}
