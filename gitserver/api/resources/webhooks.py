"""Webhooks of a repository or of a whole tenant, their deliveries and redelivery.

A tenant webhook (``/api/v1/tenants/{t}/webhooks``) gets every event of every repository of
the tenant, plus ``repository`` events (a repository was created); the same resources serve
both, only the owner differs. Only the admins of a repository manage its webhooks, only tenant
admins the tenant's (a repository or tenant the caller cannot see answers 404, like a missing
one). A webhook's URL is checked by :mod:`gitserver.net.netguard` when
it is set — syntax, scheme, and every address its host resolves to — so a URL aimed at
loopback, private or link-local addresses is refused with 400 naming ``url`` unless the server
allows private networks; it is checked again on every delivery. Secrets are write-only: the API
shows ``has_secret``, never the secret.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import falcon
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver.api import openapi as oa
from gitserver.api import paths
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json, request_schemas
from gitserver.api.context import ApiContext, Resource
from gitserver.api.handlers import created
from gitserver.api.lookup import visible_repo, visible_tenant
from gitserver.api.paging import page
from gitserver.api.paths import ID_CONVERTER, ID_SCHEMA, REPO, REPO_PARAM, TENANT, TENANT_PARAM, repo_path, tenant_path
from gitserver.api.response import schemas
from gitserver.config import Config
from gitserver.db import models
from gitserver.jsonshape import BOOLEAN, DATETIME, INTEGER, STRING, STRINGS, Out, Shape
from gitserver.net import netguard
from gitserver.pipelines import deliverylog, outbox
from gitserver.pipelines.deliverylog import DELIVERY_ATTEMPT, DELIVERY_LOG
from gitserver.policy import access
from gitserver.policy.errors import Conflict, InvalidInput, NotFound


class Routes(NamedTuple):
    """The URL templates of one owner's webhooks, from the list down to a redelivery."""

    webhooks: str
    webhook: str
    deliveries: str
    delivery: str
    redeliver: str

    @classmethod
    def under(cls, owner: str) -> Routes:
        """The templates below ``owner``'s (a repository's, or a tenant's)."""
        webhooks = f"{owner}/webhooks"
        webhook = f"{webhooks}/{{webhook_id:{ID_CONVERTER}}}"
        deliveries = f"{webhook}/deliveries"
        delivery = f"{deliveries}/{{delivery_id:{ID_CONVERTER}}}"
        return cls(webhooks, webhook, deliveries, delivery, f"{delivery}/redeliver")


REPO_ROUTES = Routes.under(REPO)
TENANT_ROUTES = Routes.under(TENANT)
TAG = "webhooks"

MAX_WEBHOOKS_PER_REPO = 20  # each one is an outbound request per push; bound the fan-out
MAX_WEBHOOKS_PER_TENANT = 20
MAX_SECRET_LENGTH = 200     # the column size of Webhook.secret


@dataclasses.dataclass(frozen=True)
class Owner:
    """Whose webhooks a request is about: one repository's, or (``repo`` None) a tenant's."""

    tenant: models.Tenant
    repo: models.Repository | None

    @property
    def name(self) -> str:
        return self.repo.full_name if self.repo is not None else f"tenant {self.tenant.name}"

    @property
    def events(self) -> tuple[str, ...]:
        return outbox.EVENTS if self.repo is not None else outbox.TENANT_EVENTS

    @property
    def limit(self) -> int:
        return MAX_WEBHOOKS_PER_REPO if self.repo is not None else MAX_WEBHOOKS_PER_TENANT

    def where(self) -> Any:
        if self.repo is not None:
            return models.Webhook.repo_id == self.repo.id
        return models.Webhook.tenant_id == self.tenant.id

    def owns(self, hook: models.Webhook) -> bool:
        if self.repo is not None:
            return hook.repo_id == self.repo.id
        return hook.tenant_id == self.tenant.id and hook.repo_id is None

    def new(self, **fields: Any) -> models.Webhook:
        if self.repo is not None:
            return models.Webhook(repo_id=self.repo.id, **fields)
        return models.Webhook(tenant_id=self.tenant.id, **fields)

    def webhook_path(self, webhook_id: int) -> str:
        base = repo_path(self.tenant.name, self.repo.name) if self.repo is not None else tenant_path(self.tenant.name)
        return f"{base}/webhooks/{webhook_id}"


WEBHOOK_SHAPE = Shape("Webhook", {
    "id": Out(INTEGER), "url": Out(STRING), "events": Out(STRINGS, value=lambda hook: outbox.split_events(hook.events)),
    "active": Out(BOOLEAN), "has_secret": Out(BOOLEAN, value=lambda hook: bool(hook.secret)),
    "created_at": Out(DATETIME)})

def webhook_json(hook: models.Webhook) -> dict[str, Any]:
    return WEBHOOK_SHAPE.render(hook)


def delivery_json(delivery: models.Delivery) -> dict[str, Any]:
    return deliverylog.delivery_summary(delivery)


def _events_checker(events: tuple[str, ...]) -> Any:
    def check(value: list[str], name: str) -> list[str]:
        if not value:
            raise InvalidInput(f"{name} must name at least one event ({', '.join(events)})", field=name)
        return [e for e in events if e in value]  # de-duplicated, in a stable order
    return check


def _check_secret(value: str, name: str) -> str:
    if any(ord(c) < 0x20 for c in value):
        raise InvalidInput(f"{name} must not contain control characters", field=name)
    return value


def _url_checker(config: Config) -> Any:
    """The ``url`` field check: netguard's syntax and the address policy for IP literals and
    ``localhost`` (pure; host names are resolved by :func:`_check_addresses`)."""
    def check(value: str, name: str) -> str:
        try:
            netguard.check_url(value, allow_private=config.allow_private_networks)
        except netguard.UnsafeURL as exc:
            raise InvalidInput(f"{name}: {exc.message}", field=name) from exc
        return value
    return check


def _check_addresses(data: dict[str, Any], config: Config) -> None:
    """Resolve the new URL's host and apply the address policy to every answer.

    Called outside any transaction: a slow DNS server must not hold a database transaction
    (on SQLite, the write lock) open. It runs after the caller was authorised, so anonymous
    clients cannot make the server resolve names for them.
    """
    if "url" not in data:
        return
    try:
        netguard.validate(data["url"], allow_private=config.allow_private_networks)
    except netguard.UnsafeURL as exc:
        raise InvalidInput(f"url: {exc.message}", field="url") from exc


def _fields(config: Config, *, creating: bool, events: tuple[str, ...] = outbox.EVENTS) -> dict[str, Field]:
    tenant_events = ("repository: a repository of the tenant was created (X-Gitserver-Event: repository, "
                     "body {action, repository})") if events == outbox.TENANT_EVENTS else ""
    return {
        "url": Field(str, required=creating, max_length=netguard.MAX_URL_LENGTH, check=_url_checker(config),
                     description="http or https; loopback, private and link-local targets are refused unless "
                                 "the server allows private networks"),
        "secret": Field(str, max_length=MAX_SECRET_LENGTH, check=_check_secret,
                        description="key of the X-Hub-Signature-256 HMAC; write-only, empty = unsigned"),
        "events": Field(list, items=str, max_length=len(events) * 4, choices=events,
                        check=_events_checker(events), description=tenant_events,
                        doc={"minItems": 1}),  # _events_checker refuses an empty list
        "active": Field(bool, description="default true" if creating else ""),
    }


def _webhook(session: Session, owner: Owner, webhook_id: int) -> models.Webhook:
    hook = session.get(models.Webhook, webhook_id)
    if hook is None or not owner.owns(hook):
        raise NotFound(f"webhook {webhook_id} not found in {owner.name}")
    return hook


def _delivery(session: Session, hook: models.Webhook, delivery_id: int) -> models.Delivery:
    delivery = session.get(models.Delivery, delivery_id)
    if delivery is None or delivery.webhook_id != hook.id:
        raise NotFound(f"delivery {delivery_id} not found for webhook {hook.id}")
    return delivery


class _Resource(Resource):
    """Falcon passes ``tenant`` (and ``repo`` on repository routes): the owner is the
    repository when there is one, else the tenant."""

    def _owner(self, session: Session, principal: access.Principal, tenant: str, repo: str | None) -> Owner:
        if repo is None:
            return Owner(visible_tenant(session, principal, tenant, admin=True), None)
        row = visible_repo(session, principal, tenant, repo, need=access.ADMIN)
        return Owner(row.tenant, row)


class Webhooks(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            data = read_json(req, _fields(self.ctx.config, creating=True, events=owner.events))
        _check_addresses(data, self.ctx.config)
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            count = session.scalar(select(func.count(models.Webhook.id)).where(owner.where()))
            if (count or 0) >= owner.limit:
                raise Conflict(f"{owner.name} already has {owner.limit} webhooks, the most it may have")
            hook = owner.new(url=data["url"], secret=data.get("secret", ""),
                             events=",".join(data.get("events", owner.events)),
                             active=data.get("active", True))
            session.add(hook)
            session.flush()
            resp.media = webhook_json(hook)
        created(resp, owner.webhook_path(hook.id))

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            stmt = select(models.Webhook).where(owner.where())
            resp.media = page(session, stmt, models.Webhook.id, req, serialize=webhook_json)


class Webhook(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
               repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            resp.media = webhook_json(_webhook(session, owner, webhook_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
                 repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            _webhook(session, owner, webhook_id)
            data = read_json(req, _fields(self.ctx.config, creating=False, events=owner.events))
        _check_addresses(data, self.ctx.config)
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            hook = _webhook(session, self._owner(session, principal, tenant, repo), webhook_id)
            if "url" in data:
                hook.url = data["url"]
            if "secret" in data:
                hook.secret = data["secret"]  # "" removes it: deliveries are then unsigned
            if "events" in data:
                hook.events = ",".join(data["events"])
            if "active" in data:
                hook.active = data["active"]
            session.flush()
            resp.media = webhook_json(hook)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
                  repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            outbox.delete_webhook(session, _webhook(session, owner, webhook_id))
        resp.status = falcon.HTTP_204


class Deliveries(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
               repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            hook = _webhook(session, self._owner(session, principal, tenant, repo), webhook_id)
            stmt = select(models.Delivery).where(models.Delivery.webhook_id == hook.id)
            resp.media = page(session, stmt, models.Delivery.id, req, descending=True,
                              serialize=delivery_json)


class Delivery(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
               delivery_id: int, repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            hook = _webhook(session, self._owner(session, principal, tenant, repo), webhook_id)
            resp.media = deliverylog.delivery_log(session, _delivery(session, hook, delivery_id))


class Redeliver(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, webhook_id: int,
                delivery_id: int, repo: str | None = None) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            owner = self._owner(session, principal, tenant, repo)
            hook = _webhook(session, owner, webhook_id)
            original = _delivery(session, hook, delivery_id)
            if not hook.active:
                raise Conflict(f"webhook {hook.id} is inactive; activate it before redelivering")
            again = outbox.redeliver(session, original)
            resp.media = delivery_json(again)
        resp.status = falcon.HTTP_202
        resp.location = f"{owner.webhook_path(hook.id)}/deliveries/{again.id}"


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    for routes in (REPO_ROUTES, TENANT_ROUTES):
        paths.mount(app, ctx, zip(routes, (Webhooks, Webhook, Deliveries, Delivery, Redeliver), strict=True))


# --- OpenAPI ----------------------------------------------------------------------------------

_WEBHOOK_ID = oa.path_param("webhook_id", "webhook id", ID_SCHEMA)
_DELIVERY_ID = oa.path_param("delivery_id", "delivery id", ID_SCHEMA)
# The request bodies, documented from the Fields their handlers validate with (the url check
# depends on the configuration; the schema does not).
REQUEST_BODIES = {
    "NewWebhook": _fields(Config(), creating=True), "WebhookChange": _fields(Config(), creating=False),
    "NewTenantWebhook": _fields(Config(), creating=True, events=outbox.TENANT_EVENTS),
    "TenantWebhookChange": _fields(Config(), creating=False, events=outbox.TENANT_EVENTS),
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    **request_schemas(REQUEST_BODIES),
    **schemas(DELIVERY_LOG, DELIVERY_ATTEMPT, listed=(WEBHOOK_SHAPE, deliverylog.DELIVERY)),
}


def _openapi_paths(routes: Routes, params: list[dict[str, Any]], whose: str, op_prefix: str,
                   schema_prefix: str) -> dict[str, Any]:
    webhooks, webhook, deliveries, delivery, redeliver = routes
    errors = (401, 403, 404)
    return {
        webhooks: {
            "parameters": params,
            "post": oa.create_op(f"create{op_prefix}Webhook", f"Add a webhook ({whose} admins)", TAG,
                                 WEBHOOK_SHAPE, f"New{schema_prefix}Webhook"),
            "get": oa.list_op(f"list{op_prefix}Webhooks", f"Webhooks of a {whose} (secrets are never shown)", TAG,
                              "webhooks", WEBHOOK_SHAPE),
        },
        oa.openapi_path(webhook): {
            "parameters": [*params, _WEBHOOK_ID],
            "get": oa.op(f"get{op_prefix}Webhook", "One webhook", TAG,
                         {200: ("The webhook", WEBHOOK_SHAPE.ref())}, errors=errors),
            "patch": oa.op(f"update{op_prefix}Webhook", "Change URL, secret, events or active", TAG,
                           {200: ("The changed webhook", WEBHOOK_SHAPE.ref())},
                           body=oa.json_body(oa.ref(f"{schema_prefix}WebhookChange"))),
            "delete": oa.op(f"delete{op_prefix}Webhook", "Delete a webhook and its delivery log", TAG,
                            {204: {"description": "Deleted"}}, errors=errors),
        },
        oa.openapi_path(deliveries): {
            "parameters": [*params, _WEBHOOK_ID],
            "get": oa.list_op(f"list{op_prefix}Deliveries", "Deliveries of a webhook, newest first", TAG,
                              "deliveries", deliverylog.DELIVERY),
        },
        oa.openapi_path(delivery): {
            "parameters": [*params, _WEBHOOK_ID, _DELIVERY_ID],
            "get": oa.op(f"get{op_prefix}Delivery",
                         "One delivery: the body, the last answer, every attempt as sent",
                         TAG, {200: ("The delivery log", DELIVERY_LOG.ref())}, errors=errors),
        },
        oa.openapi_path(redeliver): {
            "parameters": [*params, _WEBHOOK_ID, _DELIVERY_ID],
            "post": oa.op(f"redeliver{op_prefix}Delivery", "Send a delivery's payload again, as a new delivery",
                          TAG, {202: ("Queued; Location names the new delivery", deliverylog.DELIVERY.ref())},
                          errors=(401, 403, 404, 409)),
        },
    }


OPENAPI_PATHS: dict[str, Any] = {
    **_openapi_paths(REPO_ROUTES, [TENANT_PARAM, REPO_PARAM], "repository", "", ""),
    # Tenant webhooks: every event of every repository of the tenant, and ``repository`` events.
    **_openapi_paths(TENANT_ROUTES, [TENANT_PARAM], "tenant", "Tenant", "Tenant"),
}
