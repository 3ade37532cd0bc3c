"""Protected references over HTTP (docs/ref-rules.md): a repository's rule list and its
tenant's defaults, their history, and one rule set by its id.

``PUT`` takes the whole ordered list as a JSON array and answers the new version; ``GET``
answers ``{"id", "rules", …}`` of the list in force. Only repository admins change a
repository's list and tenant admins the tenant's; whoever can read the repository (or is a
member of the tenant) reads them.
"""

from __future__ import annotations

import json
from typing import Any

import falcon
from sqlalchemy.orm import Session

from gitserver.admin import refrules
from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, field_schema, read_json_value
from gitserver.api.context import ApiContext, Resource
from gitserver.api.lookup import visible_repo, visible_tenant
from gitserver.api.paging import page
from gitserver.api.paths import REPO, REPO_PARAM, TENANT, TENANT_PARAM
from gitserver.api.response import schemas
from gitserver.db import models
from gitserver.db.refrule_models import RuleSet
from gitserver.jsonshape import NULLABLE_DATETIME, NULLABLE_STRING, Out, Shape, enum
from gitserver.policy import access
from gitserver.policy import refrules as keys
from gitserver.policy.errors import NotFound

REPO_RULES = f"{REPO}/rules"
REPO_HISTORY = f"{REPO_RULES}/history"
TENANT_RULES = f"{TENANT}/rules"
TENANT_HISTORY = f"{TENANT_RULES}/history"
RULE_SET = f"{TENANT}/rule-sets/{{rule_set}}"
TAG = "rules"

_NAMES = Field(list, items=Field(str, min_length=1, max_length=100), max_length=200)
ALLOW = Field(dict, nullable=True, fields={
    keys.USERS: _NAMES, keys.GROUPS: _NAMES,
    keys.DEPLOY_KEYS: Field(list, items=Field(int), max_length=200, description="deploy key ids")},
    description="who may (users, groups, deploy keys); absent: anyone the grants let write")
RULE = Field(dict, fields={
    keys.PATTERN: Field(str, required=True, min_length=1, max_length=1024,
                        description="fnmatch glob over the full ref name (* also matches /)"),
    keys.PUSH: ALLOW,
    keys.CREATE: Field(dict, nullable=True, fields=ALLOW.fields,
                       description="who may create matching refs; absent: push applies"),
    keys.REQUIRE_SIGNED: Field(bool, description="every new commit and annotated tag signed (SSH or GPG) "
                                                 "by a registered key of its committer"),
    keys.MAX_FILE_BYTES: Field(int, nullable=True, description="largest file a new commit may add, in bytes"),
    keys.FORBIDDEN_PATHS: Field(list, items=Field(str, min_length=1, max_length=1000), max_length=100,
                                description="path globs no new commit may add or change ('*.pem', 'secrets/')"),
    keys.LINEAR: Field(bool, description="no merge commits"),
    keys.PROPERTIES: Field(list, items=Field(str, min_length=1, max_length=keys.MAX_PROPERTY),
                           max_length=keys.MAX_PROPERTIES,
                           description="the organisation's SLSA Source properties (ORG_SOURCE_*) that each "
                                       "accepted update of a matching ref carries in its Source VSA")})
RULES = Field(list, items=RULE, max_length=refrules.MAX_RULES)

RULE_LIST_SCHEMA = field_schema(RULES)
RULES_OUT = Out({"$ref": "#/components/schemas/RuleList"}, given=True)
RULE_SET_SHAPE = Shape("RuleSet", {
    "id": Out(NULLABLE_STRING, "the rule-set id; null: no list in force (the grants alone)", given=True),
    "rules": RULES_OUT,
    "source": Out(enum((refrules.SOURCE_REPOSITORY, refrules.SOURCE_TENANT, refrules.SOURCE_NONE)),
                  "where the list in force is set: the repository, its tenant's defaults, or nowhere",
                  given=True),
    "changed_by": Out(NULLABLE_STRING, given=True),
    "created_at": Out(NULLABLE_DATETIME, "since when this list holds", given=True)})
RULE_SET_VERSION = Shape("RuleSetVersion", {
    "id": Out(NULLABLE_STRING, given=True), "rules": RULES_OUT,
    "repo": Out(NULLABLE_STRING, "the repository it is set on; null: the tenant's defaults", given=True),
    "previous": Out(NULLABLE_STRING, "the id of the list it replaced", given=True),
    "previous_rules": Out({"type": ["array", "null"], "items": RULE_LIST_SCHEMA["items"]},
                          "the list it replaced; null: the first", given=True),
    "changed_by": Out(NULLABLE_STRING, given=True), "created_at": Out(NULLABLE_DATETIME, given=True)})


def in_force_json(held: refrules.InForce) -> dict[str, Any]:
    row = held.row
    return RULE_SET_SHAPE.render(
        id=refrules.rule_set_id(row) if row is not None else None, rules=held.rules, source=held.source,
        changed_by=row.changed_by if row is not None else None,
        created_at=row.created_at if row is not None else None)


def version_json(session: Session, row: RuleSet) -> dict[str, Any]:
    repo = session.get(models.Repository, row.repo_id) if row.repo_id is not None else None
    return RULE_SET_VERSION.render(
        id=refrules.rule_set_id(row), rules=json.loads(row.rules), repo=repo.name if repo is not None else None,
        previous=f"{refrules.RULE_SET_PREFIX}{row.previous_id}" if row.previous_id is not None else None,
        previous_rules=refrules.previous_rules(session, row), changed_by=row.changed_by,
        created_at=row.created_at)


class RepoRules(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            resp.media = in_force_json(refrules.in_force(session, row.tenant, row))

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
            value = read_json_value(req, RULES, refrules.FIELD)
            refrules.set_rules(session, row.tenant, row, value, principal)
            resp.media = in_force_json(refrules.in_force(session, row.tenant, row))


class TenantRules(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            resp.media = in_force_json(refrules.in_force(session, row, None))

    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant, admin=True)
            value = read_json_value(req, RULES, refrules.FIELD)
            refrules.set_rules(session, row, None, value, principal)
            resp.media = in_force_json(refrules.in_force(session, row, None))


class RepoHistory(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_repo(session, principal, tenant, repo)
            resp.media = page(session, refrules.history_query(row.tenant, row), RuleSet.id, req,
                              serialize=lambda r: version_json(session, r), descending=True)


class TenantHistory(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            resp.media = page(session, refrules.history_query(row, None), RuleSet.id, req,
                              serialize=lambda r: version_json(session, r), descending=True)


class OneRuleSet(Resource):
    """A rule set by the id a push's ref update recorded: what judged it, since when."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, rule_set: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = visible_tenant(session, principal, tenant)
            found = refrules.get_rule_set(session, row, rule_set)
            if found.repo_id is not None:
                repo = session.get(models.Repository, found.repo_id)
                try:  # a repository's list is shown to whoever can read the repository
                    visible_repo(session, principal, tenant, repo.name if repo is not None else "")
                except NotFound as exc:
                    raise NotFound(f"rule set {rule_set[:40]!r} not found") from exc
            resp.media = version_json(session, found)


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    paths.mount(app, ctx, ((REPO_RULES, RepoRules), (REPO_HISTORY, RepoHistory), (TENANT_RULES, TenantRules),
                           (TENANT_HISTORY, TenantHistory), (RULE_SET, OneRuleSet)))


RULE_SET_PARAM = oa.path_param("rule_set", "a rule-set id (rs-<n>)", {"type": "string", "maxLength": 40})
_BODY = oa.json_body(oa.ref("RuleList"))

# The rule list's body is a JSON array: one Field, not an object's fields.
REQUEST_BODIES = {"RuleList": RULES}
OPENAPI_SCHEMAS: dict[str, Any] = {"RuleList": RULE_LIST_SCHEMA,
                                   **schemas(RULE_SET_SHAPE, listed=(RULE_SET_VERSION,))}

OPENAPI_PATHS: dict[str, Any] = {
    REPO_RULES: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.op("getRepoRules", "The rule list in force for a repository (its own, else the tenant's)",
                     TAG, {200: ("The list and its id", RULE_SET_SHAPE.ref())}, errors=(401, 403, 404)),
        "put": oa.op("setRepoRules", "Replace a repository's ordered rule list (repository admins)", TAG,
                     {200: ("The new list in force", RULE_SET_SHAPE.ref())}, body=_BODY),
    },
    REPO_HISTORY: {
        "parameters": [TENANT_PARAM, REPO_PARAM],
        "get": oa.list_op("listRepoRuleSets", "Every version of a repository's rule list, newest first", TAG,
                          "versions", RULE_SET_VERSION),
    },
    TENANT_RULES: {
        "parameters": [TENANT_PARAM],
        "get": oa.op("getTenantRules", "The tenant's default rule list", TAG,
                     {200: ("The list and its id", RULE_SET_SHAPE.ref())}, errors=(401, 404)),
        "put": oa.op("setTenantRules", "Replace the tenant's default rule list (tenant admins)", TAG,
                     {200: ("The new list", RULE_SET_SHAPE.ref())}, body=_BODY),
    },
    TENANT_HISTORY: {
        "parameters": [TENANT_PARAM],
        "get": oa.list_op("listTenantRuleSets", "Every version of the tenant's default rule list, newest first",
                          TAG, "versions", RULE_SET_VERSION),
    },
    RULE_SET: {
        "parameters": [TENANT_PARAM, RULE_SET_PARAM],
        "get": oa.op("getRuleSet", "One version of a rule list by its id (as ref updates record it)", TAG,
                     {200: ("The version", RULE_SET_VERSION.ref())}, errors=(401, 404)),
    },
}
