"""Groups of a tenant and their members. Members of the tenant see groups; its admins change
them. Grants to a group reach its members at their next SSH connection or API request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import falcon
from sqlalchemy.orm import Session

from gitserver.admin import groups, users
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created, listing
from gitserver.api.lookup import visible_tenant
from gitserver.api.paths import GROUP_PARAM, TENANT, TENANT_PARAM, USER_PARAM
from gitserver.api.response import schemas
from gitserver.api.shapes import DESCRIPTION_FIELD, NAME_FIELD, USER_SHAPE
from gitserver.db import models
from gitserver.jsonshape import DATETIME, INTEGER, STRING, Out, Shape
from gitserver.policy import access
from gitserver.policy.errors import NotFound

GROUPS = f"{TENANT}/groups"
GROUP = f"{GROUPS}/{{group}}"
MEMBERS = f"{GROUP}/members"
MEMBER = f"{MEMBERS}/{{user}}"
TAG = "groups"


def group_path(tenant: str, group: str) -> str:
    return f"/api/v1/tenants/{tenant}/groups/{group}"


GROUP_SHAPE = Shape("Group", {
    "id": Out(INTEGER), "tenant": Out(STRING, value=lambda group: group.tenant.name), "name": Out(STRING),
    "description": Out(STRING), "created_at": Out(DATETIME)})


def group_json(group: models.Group) -> dict[str, Any]:
    return GROUP_SHAPE.render(group)


def _group(session: Session, principal: access.Principal, tenant: str, group: str, *,
           manage: bool = False) -> models.Group:
    return groups.get_group(session, visible_tenant(session, principal, tenant, admin=manage), group)


class Groups(Resource):
    FIELDS: ClassVar[Mapping[str, Field]] = {"name": NAME_FIELD, "description": DESCRIPTION_FIELD}

    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            data = read_json(req, self.FIELDS)
            group = groups.create_group(session, row, data["name"], data.get("description", ""))
            resp.media = group_json(group)
        created(resp, group_path(tenant, group.name))

    on_get = listing(visible_tenant, groups.groups_query, models.Group.id, group_json)


class Group(Resource):
    PATCH_FIELDS: ClassVar[Mapping[str, Field]] = {"description": DESCRIPTION_FIELD}

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            resp.media = group_json(_group(session, principal, tenant, group))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _group(session, principal, tenant, group, manage=True)
            data = read_json(req, self.PATCH_FIELDS)
            resp.media = group_json(groups.update_group(session, row, description=data.get("description")))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            groups.delete_group(session, _group(session, principal, tenant, group, manage=True))
        resp.status = falcon.HTTP_204


class Members(Resource):
    on_get = listing(_group, groups.members_query, models.User.id, USER_SHAPE.render)


class Member(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _group(session, principal, tenant, group)
            member = users.get_user(session, row.tenant, user)
            if session.get(models.GroupMember, (row.id, member.id)) is None:
                raise NotFound(f"user {user!r} is not a member of group {group!r}")
            resp.media = USER_SHAPE.render(member)

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _group(session, principal, tenant, group, manage=True)
            member = users.get_user(session, row.tenant, user)
            groups.add_member(session, row, member)
            resp.media = USER_SHAPE.render(member)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, group: str, user: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = _group(session, principal, tenant, group, manage=True)
            groups.remove_member(session, row, users.get_user(session, row.tenant, user))
        resp.status = falcon.HTTP_204


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((GROUPS, Groups), (GROUP, Group), (MEMBERS, Members), (MEMBER, Member)))


# The request bodies, documented from the Fields their handlers validate with.
REQUEST_BODIES = {"NewGroup": Groups.FIELDS, "GroupChange": Group.PATCH_FIELDS}

OPENAPI_SCHEMAS: dict[str, Any] = {**schemas(listed=(GROUP_SHAPE,)), **request_schemas(REQUEST_BODIES)}

OPENAPI_PATHS: dict[str, Any] = {
    GROUPS: {
        "parameters": [TENANT_PARAM],
        "post": oa.create_op("createGroup", "Create a group (tenant admins)", TAG, GROUP_SHAPE, "NewGroup"),
        "get": oa.list_op("listGroups", "Groups of a tenant", TAG, "groups", GROUP_SHAPE, errors=(400, 401, 404)),
    },
    GROUP: {
        "parameters": [TENANT_PARAM, GROUP_PARAM],
        "get": oa.op("getGroup", "One group", TAG, {200: ("The group", GROUP_SHAPE.ref())}, errors=(401, 404)),
        "patch": oa.op("updateGroup", "Change a group's description", TAG,
                       {200: ("The changed group", GROUP_SHAPE.ref())},
                       body=oa.json_body(oa.ref("GroupChange"))),
        "delete": oa.op("deleteGroup", "Delete a group, its memberships and its grants", TAG,
                        {204: {"description": "Deleted"}}, errors=(401, 403, 404)),
    },
    MEMBERS: {
        "parameters": [TENANT_PARAM, GROUP_PARAM],
        "get": oa.list_op("listMembers", "Members of a group", TAG, "users", USER_SHAPE, errors=(400, 401, 404)),
    },
    MEMBER: {
        "parameters": [TENANT_PARAM, GROUP_PARAM, USER_PARAM],
        "get": oa.op("getMember", "One member of a group", TAG, {200: ("The member", USER_SHAPE.ref())},
                     errors=(401, 404)),
        "put": oa.op("addMember", "Add a user of the tenant to the group (idempotent)", TAG,
                     {200: ("The member", USER_SHAPE.ref())}, errors=(401, 403, 404)),
        "delete": oa.op("removeMember", "Remove a user from the group", TAG,
                        {204: {"description": "Removed"}}, errors=(401, 403, 404)),
    },
}
