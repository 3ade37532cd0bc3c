"""Webhooks of a repository, their deliveries and redelivery.

Only the admins of a repository manage its webhooks (a repository the caller cannot see
answers 404, like a missing one). A webhook's URL is checked by :mod:`gitserver.netguard` when
it is set — syntax, scheme, and every address its host resolves to — so a URL aimed at
loopback, private or link-local addresses is refused with 400 naming ``url`` unless the server
allows private networks; it is checked again on every delivery. Secrets are write-only: the API
shows ``has_secret``, never the secret.
"""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver import access, netguard
from gitserver.api import openapi as oa
from gitserver.api.auth import authenticated
from gitserver.api.body import Field, read_json
from gitserver.api.context import ApiContext
from gitserver.api.lookup import visible_repo
from gitserver.api.paging import OPENAPI_PARAMETERS, list_schema, page
from gitserver.api.resources.repos import REPO, REPO_PARAM, repo_path
from gitserver.api.resources.tenants import TENANT_PARAM
from gitserver.api.resources.users import DATETIME, ID_CONVERTER, ID_SCHEMA, NULLABLE_DATETIME
from gitserver.config import Config
from gitserver.db import models
from gitserver.errors import Conflict, InvalidInput, NotFound
from gitserver.pipelines import notify

WEBHOOKS = f"{REPO}/webhooks"
WEBHOOK = f"{WEBHOOKS}/{{webhook_id:{ID_CONVERTER}}}"
DELIVERIES = f"{WEBHOOK}/deliveries"
DELIVERY = f"{DELIVERIES}/{{delivery_id:{ID_CONVERTER}}}"
REDELIVER = f"{DELIVERY}/redeliver"
TAG = "webhooks"

MAX_WEBHOOKS_PER_REPO = 20  # each one is an outbound request per push; bound the fan-out
MAX_SECRET_LENGTH = 200     # the column size of Webhook.secret
DEFAULT_EVENTS = list(notify.EVENTS)


def webhook_path(tenant: str, repo: str, webhook_id: int) -> str:
    return f"{repo_path(tenant, repo)}/webhooks/{webhook_id}"


def webhook_json(hook: models.Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": notify.split_events(hook.events),
            "active": hook.active, "has_secret": bool(hook.secret), "created_at": hook.created_at}


def _check_events(value: list[str], name: str) -> list[str]:
    if not value:
        raise InvalidInput(f"{name} must name at least one event ({', '.join(notify.EVENTS)})", field=name)
    return [e for e in notify.EVENTS if e in value]  # de-duplicated, in a stable order


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


def _fields(config: Config, *, creating: bool) -> dict[str, Field]:
    return {
        "url": Field(str, required=creating, max_length=netguard.MAX_URL_LENGTH, check=_url_checker(config)),
        "secret": Field(str, max_length=MAX_SECRET_LENGTH, check=_check_secret),
        "events": Field(list, items=str, max_length=len(notify.EVENTS) * 4, choices=notify.EVENTS,
                        check=_check_events),
        "active": Field(bool),
    }


def _webhook(session: Session, repo: models.Repository, webhook_id: int) -> models.Webhook:
    hook = session.get(models.Webhook, webhook_id)
    if hook is None or hook.repo_id != repo.id:
        raise NotFound(f"webhook {webhook_id} not found in {repo.full_name}")
    return hook


def _delivery(session: Session, hook: models.Webhook, delivery_id: int) -> models.Delivery:
    delivery = session.get(models.Delivery, delivery_id)
    if delivery is None or delivery.webhook_id != hook.id:
        raise NotFound(f"delivery {delivery_id} not found for webhook {hook.id}")
    return delivery


class _Resource:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _repo(self, session: Session, principal: access.Principal, tenant: str, repo: str) -> models.Repository:
        return visible_repo(session, principal, tenant, repo, need=access.ADMIN)


class Webhooks(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            self._repo(session, principal, tenant, repo)
            data = read_json(req, _fields(self.ctx.config, creating=True))
        _check_addresses(data, self.ctx.config)
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            count = session.scalar(select(func.count(models.Webhook.id))
                                   .where(models.Webhook.repo_id == row.id))
            if (count or 0) >= MAX_WEBHOOKS_PER_REPO:
                raise Conflict(f"{row.full_name} already has {MAX_WEBHOOKS_PER_REPO} webhooks, the most "
                               "a repository may have")
            hook = models.Webhook(repo_id=row.id, url=data["url"], secret=data.get("secret", ""),
                                  events=",".join(data.get("events", DEFAULT_EVENTS)),
                                  active=data.get("active", True))
            session.add(hook)
            session.flush()
            resp.media = webhook_json(hook)
        resp.status = falcon.HTTP_201
        resp.location = webhook_path(tenant, row.name, hook.id)

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            stmt = select(models.Webhook).where(models.Webhook.repo_id == row.id)
            resp.media = page(session, stmt, models.Webhook.id, req, serialize=webhook_json)


class Webhook(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
               webhook_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            resp.media = webhook_json(_webhook(session, row, webhook_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                 webhook_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            _webhook(session, self._repo(session, principal, tenant, repo), webhook_id)
            data = read_json(req, _fields(self.ctx.config, creating=False))
        _check_addresses(data, self.ctx.config)
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            hook = _webhook(session, self._repo(session, principal, tenant, repo), webhook_id)
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

    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                  webhook_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            notify.delete_webhook(session, _webhook(session, row, webhook_id))
        resp.status = falcon.HTTP_204


class Deliveries(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
               webhook_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            hook = _webhook(session, row, webhook_id)
            stmt = select(models.Delivery).where(models.Delivery.webhook_id == hook.id)
            resp.media = page(session, stmt, models.Delivery.id, req, descending=True,
                              serialize=notify.delivery_summary)


class Delivery(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
               webhook_id: int, delivery_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            hook = _webhook(session, row, webhook_id)
            resp.media = notify.delivery_log(session, _delivery(session, hook, delivery_id))


class Redeliver(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant: str, repo: str,
                webhook_id: int, delivery_id: int) -> None:
        with authenticated(self.ctx.runtime.sessions, req) as (session, principal):
            row = self._repo(session, principal, tenant, repo)
            hook = _webhook(session, row, webhook_id)
            original = _delivery(session, hook, delivery_id)
            if not hook.active:
                raise Conflict(f"webhook {hook.id} is inactive; activate it before redelivering")
            again = notify.redeliver(session, original)
            resp.media = notify.delivery_summary(again)
        resp.status = falcon.HTTP_202
        resp.location = f"{webhook_path(tenant, row.name, hook.id)}/deliveries/{again.id}"


def add_routes(app: falcon.App, ctx: ApiContext) -> None:
    app.add_route(WEBHOOKS, Webhooks(ctx))
    app.add_route(WEBHOOK, Webhook(ctx))
    app.add_route(DELIVERIES, Deliveries(ctx))
    app.add_route(DELIVERY, Delivery(ctx))
    app.add_route(REDELIVER, Redeliver(ctx))


# --- OpenAPI ----------------------------------------------------------------------------------

_WEBHOOK_ID = oa.path_param("webhook_id", "webhook id", ID_SCHEMA)
_DELIVERY_ID = oa.path_param("delivery_id", "delivery id", ID_SCHEMA)
_EVENTS = {"type": "array", "items": {"type": "string", "enum": list(notify.EVENTS)},
           "minItems": 1, "maxItems": len(notify.EVENTS) * 4}
_URL = {"type": "string", "maxLength": netguard.MAX_URL_LENGTH,
        "description": "http or https; loopback, private and link-local targets are refused unless "
                       "the server allows private networks"}
_SECRET = {"type": "string", "maxLength": MAX_SECRET_LENGTH,
           "description": "key of the X-Hub-Signature-256 HMAC; write-only, empty = unsigned"}
_DELIVERY_STATUS = {"type": "string", "enum": [notify.PENDING, notify.RETRYING, notify.DELIVERED, notify.FAILED]}
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_NULLABLE_STATUS = {"type": ["integer", "null"], "description": "null when no answer came"}
_DELIVERY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "integer"}, "guid": {"type": "string", "description": "X-Gitserver-Delivery"},
    "event": {"type": "string"}, "status": _DELIVERY_STATUS, "attempts": {"type": "integer"},
    "response_status": {"type": ["integer", "null"]},
    "error": {"type": "string", "description": "why the last attempt failed (empty once delivered)"},
    "pipeline_id": {"type": ["integer", "null"]}, "created_at": DATETIME,
    "delivered_at": NULLABLE_DATETIME,
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Webhook": {
        "type": "object", "required": ["id", "url", "events", "active", "has_secret", "created_at"],
        "properties": {"id": {"type": "integer"}, "url": {"type": "string"},
                       "events": {"type": "array", "items": {"type": "string"}},
                       "active": {"type": "boolean"}, "has_secret": {"type": "boolean"},
                       "created_at": DATETIME},
    },
    "WebhookList": list_schema("#/components/schemas/Webhook"),
    "NewWebhook": {
        "type": "object", "required": ["url"], "additionalProperties": False,
        "properties": {"url": _URL, "secret": _SECRET, "events": _EVENTS,
                       "active": {"type": "boolean", "description": "default true"}},
    },
    "WebhookChange": {
        "type": "object", "additionalProperties": False,
        "properties": {"url": _URL, "secret": _SECRET, "events": _EVENTS, "active": {"type": "boolean"}},
    },
    "Delivery": {"type": "object", "required": list(_DELIVERY_PROPERTIES), "properties": _DELIVERY_PROPERTIES},
    "DeliveryList": list_schema("#/components/schemas/Delivery"),
    "DeliveryAttempt": {
        "type": "object",
        "required": ["number", "started_at", "duration_ms", "outcome", "request", "response", "error"],
        "properties": {
            "number": {"type": "integer", "description": "1 for the first attempt"},
            "started_at": DATETIME, "duration_ms": {"type": "integer"},
            "outcome": {"type": "string", "enum": [notify.DELIVERED, notify.RETRYING, notify.FAILED],
                        "description": "what this attempt led to"},
            "request": {"type": "object", "required": ["method", "url", "headers", "body_sha256"],
                        "properties": {
                            "method": {"type": "string"}, "url": {"type": "string"},
                            "headers": {**_HEADERS, "description": "as sent, X-Hub-Signature-256 "
                                        "included; credentials shown as '***' (Authorization: Bearer ***)"},
                            "body_sha256": {"type": "string", "description": "hex SHA-256 of the body sent"}}},
            "response": {"type": "object", "required": ["status", "headers", "excerpt"],
                         "properties": {
                             "status": _NULLABLE_STATUS,
                             "headers": {**_HEADERS, "description": f"at most {notify.RESPONSE_HEADERS_MAX} "
                                         "of the answer's headers, values cut, cookies left out"},
                             "excerpt": {"type": "string", "description": "first 2 KiB of the answer"}}},
            "error": {"type": "string", "description": "why the attempt failed; empty when delivered"},
        },
    },
    "DeliveryLog": {
        "type": "object", "required": [*_DELIVERY_PROPERTIES, "request", "response", "log", "attempt_log"],
        "properties": {
            **_DELIVERY_PROPERTIES,
            "request": {"type": "object", "required": ["method", "url", "headers", "body"],
                        "properties": {"method": {"type": "string"}, "url": {"type": "string"},
                                       "headers": {**_HEADERS, "description": "those of the latest "
                                                   "attempt as sent (see attempt_log); empty before "
                                                   "the first attempt"},
                                       "body": {"description": "the JSON payload sent"}}},
            "response": {"type": "object", "required": ["status", "excerpt"],
                         "properties": {"status": {"type": ["integer", "null"]},
                                        "excerpt": {"type": "string",
                                                    "description": "first 2 KiB of the last answer"}}},
            "log": {"type": "array", "items": {"type": "string"},
                    "description": "one line per attempt: time, duration, outcome"},
            "attempt_log": {"type": "array", "items": oa.ref("DeliveryAttempt"),
                            "description": "every attempt as stored when it was made, oldest first"},
        },
    },
}

_PARAMS = [TENANT_PARAM, REPO_PARAM]
_ERRORS = (401, 403, 404)

OPENAPI_PATHS: dict[str, Any] = {
    WEBHOOKS: {
        "parameters": _PARAMS,
        "post": oa.op("createWebhook", "Add a webhook (repository admins)", TAG,
                      {201: ("Created; Location names it", oa.ref("Webhook"))},
                      errors=(400, 401, 403, 404, 409), body=oa.json_body(oa.ref("NewWebhook"))),
        "get": oa.op("listWebhooks", "Webhooks of a repository (secrets are never shown)", TAG,
                     {200: ("A page of webhooks", oa.ref("WebhookList"))}, parameters=OPENAPI_PARAMETERS),
    },
    oa.openapi_path(WEBHOOK): {
        "parameters": [*_PARAMS, _WEBHOOK_ID],
        "get": oa.op("getWebhook", "One webhook", TAG, {200: ("The webhook", oa.ref("Webhook"))},
                     errors=_ERRORS),
        "patch": oa.op("updateWebhook", "Change URL, secret, events or active", TAG,
                       {200: ("The changed webhook", oa.ref("Webhook"))},
                       body=oa.json_body(oa.ref("WebhookChange"))),
        "delete": oa.op("deleteWebhook", "Delete a webhook and its delivery log", TAG,
                        {204: {"description": "Deleted"}}, errors=_ERRORS),
    },
    oa.openapi_path(DELIVERIES): {
        "parameters": [*_PARAMS, _WEBHOOK_ID],
        "get": oa.op("listDeliveries", "Deliveries of a webhook, newest first", TAG,
                     {200: ("A page of deliveries", oa.ref("DeliveryList"))}, parameters=OPENAPI_PARAMETERS),
    },
    oa.openapi_path(DELIVERY): {
        "parameters": [*_PARAMS, _WEBHOOK_ID, _DELIVERY_ID],
        "get": oa.op("getDelivery", "One delivery: the body, the last answer, every attempt as sent",
                     TAG, {200: ("The delivery log", oa.ref("DeliveryLog"))}, errors=_ERRORS),
    },
    oa.openapi_path(REDELIVER): {
        "parameters": [*_PARAMS, _WEBHOOK_ID, _DELIVERY_ID],
        "post": oa.op("redeliverDelivery", "Send a delivery's payload again, as a new delivery", TAG,
                      {202: ("Queued; Location names the new delivery", oa.ref("Delivery"))},
                      errors=(401, 403, 404, 409)),
    },
}
