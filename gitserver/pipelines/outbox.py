"""The outbox of webhooks and callbacks: queueing them in the caller's transaction, and
reading their attempts back (:mod:`gitserver.pipelines.deliverylog` shows them).

Producers call :func:`enqueue_event` (webhook events ``push`` and ``pipeline``, and
``repository`` for tenant webhooks, see :func:`notify_repository`) or
:func:`enqueue_callback` (Repour-style callbacks) inside their own transaction: the delivery
row and its job (kind ``webhook`` or ``callback``) become visible with the event that caused
them, or not at all. Sending them is :mod:`gitserver.pipelines.deliver`'s job, run by the
worker.

This module never sends anything, and imports nothing that does: the SSH daemon queues a
push's webhooks through it (:mod:`gitserver.push.ledger`) and so would otherwise load
``requests`` and :mod:`gitserver.net.netguard` for nothing (see docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.db import models
from gitserver.git import push_options
from gitserver.net.urls import http_clone_url, pipeline_url, ssh_clone_url
from gitserver.pipelines import jobs
from gitserver.policy.access import PrincipalKind

EVENT_PUSH = "push"
EVENT_PIPELINE = "pipeline"
EVENTS = (EVENT_PUSH, EVENT_PIPELINE)
# Tenant webhooks also get ``repository`` events (a repository of the tenant was created).
EVENT_REPOSITORY = "repository"
TENANT_EVENTS = (*EVENTS, EVENT_REPOSITORY)
REPOSITORY_CREATED = "created"
REPOSITORY_ACTIONS = (REPOSITORY_CREATED,)
EVENT_CALLBACK = "callback"  # Delivery.event of callbacks (they have no webhook)
# Where a callback's fresh headers come from before each attempt: a closed set of names, stored
# in the callback's job (payload "auth"). The worker maps each name to its function
# (gitserver.pipelines.worker.job_handlers); the row never names code.
CREDENTIALS_SERVICE_TOKEN = "service-token"  # Repour's OIDC service-account bearer token
CREDENTIALS = (CREDENTIALS_SERVICE_TOKEN,)
CALLBACK_METHODS = ("POST", "PUT")

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-Gitserver-Event"
DELIVERY_HEADER = "X-Gitserver-Delivery"
# Headers a callback producer may not set: they are gitserver's or the transport's.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    SIGNATURE_HEADER, EVENT_HEADER, DELIVERY_HEADER, "User-Agent", "Content-Type",
    "Content-Length", "Host", "Transfer-Encoding", "Connection"))
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")

# Delivery states.
PENDING, RETRYING, DELIVERED, FAILED = "pending", "retrying", "delivered", "failed"
FINAL = (DELIVERED, FAILED)

# The worker gives up on a job after the payload's "max_attempts" (jobs.DEFAULT_MAX_ATTEMPTS
# otherwise) without telling the handler; the handler must make that decision itself so the
# delivery row says "failed". So jobs carry this ceiling and the handler stops at
# min(config.webhook_max_attempts, ceiling) attempts.
MAX_ATTEMPTS_CEILING = 25


# --- payloads ---------------------------------------------------------------------------------------

def encode_payload(payload: Mapping[str, Any]) -> str:
    """The exact JSON text sent (and signed): compact, ASCII-only, key order kept."""
    return json.dumps(payload, separators=(",", ":"), default=str)


def repository_json(repo: models.Repository, ssh_base_url: str) -> dict[str, Any]:
    return {"tenant": repo.tenant.name, "name": repo.name, "full_name": repo.full_name,
            "ssh_url": ssh_clone_url(ssh_base_url, repo.tenant.name, repo.name)}


def push_payload(session: Session, config: Config, push: models.Push,
                 pipeline: models.Pipeline | None) -> dict[str, Any]:
    """The ``push`` event: who pushed which refs, and the pipeline it started."""
    repo = session.get(models.Repository, push.repo_id)
    assert repo is not None  # the push row references it
    user = session.get(models.User, push.user_id) if push.user_id is not None else None
    pusher: dict[str, Any] = {
        "kind": PrincipalKind.USER if user is not None else PrincipalKind.DEPLOY_KEY,
        "name": user.name if user is not None else None,
        "tenant": user.tenant.name if user is not None else None,
        "key_fingerprint": push.key_fingerprint,
        "protocol": push.protocol,
        "certificate": push.certificate,  # {"ca", "key_id", "serial"} or None (a plain key)
    }
    return {
        "event": EVENT_PUSH,
        "repository": repository_json(repo, config.ssh_base_url),
        "pusher": pusher,
        "ref_updates": [{"ref": u.ref, "old": u.old, "new": u.new} for u in push.ref_updates],
        "push_options": push_options.shown(json.loads(push.push_options or "[]")),
        "push_id": push.id,
        "pipeline_id": pipeline.id if pipeline is not None else None,
    }


def pipeline_payload(session: Session, config: Config, pipeline: models.Pipeline) -> dict[str, Any]:
    """The ``pipeline`` event: a pipeline reached its final state."""

    repo = session.get(models.Repository, pipeline.repo_id)
    assert repo is not None
    return {
        "event": EVENT_PIPELINE,
        "pipeline": {"id": pipeline.id, "status": pipeline.status, "ref": pipeline.ref,
                     "commit": pipeline.commit, "archive_tag": pipeline.archive_tag,
                     "url": pipeline_url(config.http_base_url, pipeline.id),
                     "error": pipeline.error,
                     "started_at": _iso(pipeline.started_at), "finished_at": _iso(pipeline.finished_at)},
        "repository": repository_json(repo, config.ssh_base_url),
    }


def repository_event_payload(session: Session, config: Config, repo: models.Repository,
                             action: str) -> dict[str, Any]:
    """The ``repository`` event: ``{"action": "created", "repository": {…}}``."""
    return {
        "action": action,
        "repository": {
            **repository_json(repo, config.ssh_base_url),
            "id": repo.id, "description": repo.description, "visibility": repo.visibility,
            "http_url": http_clone_url(config.http_base_url, repo.tenant.name, repo.name),
            "created_at": _iso(repo.created_at),
        },
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def render(session: Session, config: Config, event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a webhook event as sent: built from the rows the event names.

    Producers identify the push (``push_id``, or ``push.id``) or the pipeline (``pipeline.id``
    or ``pipeline_id``); the documented shape is built here, where the configuration (for
    ``ssh_url`` and the pipeline URL) is at hand, so every producer sends the same shape. Rows
    it names are immutable once the event exists (a push, a finished pipeline), so rendering
    again gives the same body. A payload naming no known row is sent as given.
    """
    if event == EVENT_PUSH:
        nested = payload.get("push")
        push_id = _int(payload.get("push_id")) or (_int(nested.get("id")) if isinstance(nested, Mapping) else None)
        push = session.get(models.Push, push_id) if push_id is not None else None
        if push is not None:
            pipeline = session.scalar(select(models.Pipeline).where(models.Pipeline.push_id == push.id))
            return push_payload(session, config, push, pipeline)
    elif event == EVENT_PIPELINE:
        pipeline_id = _pipeline_id_of(payload)
        pipeline = session.get(models.Pipeline, pipeline_id) if pipeline_id is not None else None
        if pipeline is not None:
            return pipeline_payload(session, config, pipeline)
    elif event == EVENT_REPOSITORY:
        repo_id = _int(payload.get("repository_id"))
        repo = session.get(models.Repository, repo_id) if repo_id is not None else None
        if repo is not None:
            return repository_event_payload(session, config, repo, str(payload.get("action")))
        return dict(payload)
    return {"event": event, **payload}



def split_events(events: str) -> list[str]:
    return [e for e in (p.strip() for p in events.split(",")) if e]


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a producer's extra headers: token-syntax names, no line breaks, no reserved
    names (gitserver sets those)."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name} is set by gitserver and cannot be overridden")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid value for header {name}")
        out[name] = value
    return out



# --- the outbox (caller's session; flush, never commit) -----------------------------------------

def _pipeline_id_of(payload: Mapping[str, Any]) -> int | None:
    pipeline = payload.get("pipeline")
    candidate = pipeline.get("id") if isinstance(pipeline, Mapping) else payload.get("pipeline_id")
    return candidate if isinstance(candidate, int) and not isinstance(candidate, bool) else None


def _new_delivery(session: Session, *, webhook_id: int | None, event: str, url: str, method: str,
                  body: str, pipeline_id: int | None, kind: str,
                  job_extra: Mapping[str, Any] | None = None) -> models.Delivery:
    delivery = models.Delivery(webhook_id=webhook_id, pipeline_id=pipeline_id, guid=str(uuid.uuid4()),
                               event=event, url=url, method=method, payload=body, status=PENDING,
                               attempts=0, response_excerpt="", error="")
    session.add(delivery)
    session.flush()
    jobs.enqueue(session, kind, {"delivery_id": delivery.id, "max_attempts": MAX_ATTEMPTS_CEILING,
                                 **(job_extra or {})})
    return delivery


def enqueue_event(session: Session, repo_id: int, event: str,
                  payload: dict[str, Any]) -> list[models.Delivery]:
    """Queue ``event`` for every active webhook subscribed to it — the repository's own and
    its tenant's: one Delivery and one ``webhook`` job each (flushed, not committed).

    ``payload`` names the push (``push_id`` or ``push.id``), the pipeline (``pipeline.id``
    or ``pipeline_id``) or, for ``repository`` events (tenant webhooks only), the repository
    (``repository_id``) and the ``action``; the first attempt turns it into the documented
    body with :func:`render`."""
    if event not in TENANT_EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; known: {', '.join(TENANT_EVENTS)}")
    tenant_id = select(models.Repository.tenant_id).where(models.Repository.id == repo_id).scalar_subquery()
    owner = models.Webhook.tenant_id == tenant_id
    if event in EVENTS:
        owner = or_(models.Webhook.repo_id == repo_id, owner)
    hooks = session.scalars(
        select(models.Webhook).where(owner, models.Webhook.active.is_(True))
        .order_by(models.Webhook.id)).all()
    matching = [h for h in hooks if event in split_events(h.events)]
    if not matching:
        return []
    body = encode_payload(payload if event == EVENT_REPOSITORY else {"event": event, **payload})
    pipeline_id = _pipeline_id_of(payload)
    return [_new_delivery(session, webhook_id=hook.id, event=event, url=hook.url, method="POST",
                          body=body, pipeline_id=pipeline_id, kind=jobs.JobKind.WEBHOOK)
            for hook in matching]


def notify_repository(session: Session, repo: models.Repository, action: str) -> list[models.Delivery]:
    """Queue the ``repository`` event (``created``, …) for the tenant's webhooks."""
    if action not in REPOSITORY_ACTIONS:
        raise ValueError(f"unknown repository action {action!r}")
    return enqueue_event(session, repo.id, EVENT_REPOSITORY, {"action": action, "repository_id": repo.id})


def enqueue_callback(session: Session, url: str, method: str, payload: dict[str, Any],
                     pipeline_id: int | None = None, headers: Mapping[str, str] | None = None,
                     auth: str | None = None) -> models.Delivery:
    """Queue one callback (Repour's callback mode): ``method`` (POST or PUT) of the JSON
    ``payload`` to ``url``, retried like a webhook, ``Delivery.webhook_id`` NULL.

    ``headers`` are sent as given (e.g. a fixed ``Authorization``). ``auth``, one of
    :data:`CREDENTIALS`, names where fresh headers come from before every attempt (a bearer
    token that may have expired between retries). The URL's syntax is checked here; its
    addresses are checked on every attempt. Raises ValueError for bad input.
    """
    method = method.upper()
    if method not in CALLBACK_METHODS:
        raise ValueError(f"callback method must be one of {', '.join(CALLBACK_METHODS)}, not {method!r}")
    # netguard is imported here, not at the top: it brings the HTTP sender (requests, urllib3),
    # and the SSH daemon, which queues a push's webhooks through this module, never queues a
    # callback (only Repour, in the API and the worker, does).
    from gitserver.net import netguard

    try:
        netguard.check_url(url, allow_private=True)  # syntax here; the address policy when sending
    except netguard.UnsafeURL as exc:
        raise ValueError(f"callback url: {exc.message}") from exc
    extra: dict[str, Any] = {}
    checked = check_headers(headers)
    if checked:
        extra["headers"] = checked
    if auth is not None:
        if auth not in CREDENTIALS:
            raise ValueError(f"callback auth must be one of {', '.join(CREDENTIALS)}, not {auth!r}")
        extra["auth"] = auth
    return _new_delivery(session, webhook_id=None, event=EVENT_CALLBACK, url=url, method=method,
                         body=encode_payload(payload), pipeline_id=pipeline_id, kind=jobs.JobKind.CALLBACK,
                         job_extra=extra)


def redeliver(session: Session, delivery: models.Delivery) -> models.Delivery:
    """A new delivery (new guid, fresh attempts) of a webhook delivery's payload, to the
    webhook's current URL (an admin who fixed a wrong URL redelivers to the fixed one)."""
    hook = session.get(models.Webhook, delivery.webhook_id) if delivery.webhook_id is not None else None
    if hook is None:
        # A callback's extra headers live in its job, not in the row: it cannot be rebuilt.
        raise ValueError(f"delivery {delivery.id} is not a webhook delivery")
    return _new_delivery(session, webhook_id=hook.id, event=delivery.event, url=hook.url,
                         method=delivery.method, body=delivery.payload,
                         pipeline_id=delivery.pipeline_id, kind=jobs.JobKind.WEBHOOK)


# --- reading deliveries back (gitserver.pipelines.deliverylog shows them) ------------------------

def delivery_attempts(session: Session, delivery_id: int) -> list[models.DeliveryAttempt]:
    """The attempt rows of a delivery, oldest first (by number; by id between two workers'
    attempts of the same number)."""
    return list(session.scalars(
        select(models.DeliveryAttempt).where(models.DeliveryAttempt.delivery_id == delivery_id)
        .order_by(models.DeliveryAttempt.number, models.DeliveryAttempt.id)))


def delete_webhook(session: Session, hook: models.Webhook) -> None:
    """Delete a webhook and its delivery log. Jobs still queued for its deliveries find no
    delivery and end without sending."""
    deliveries = select(models.Delivery.id).where(models.Delivery.webhook_id == hook.id)
    # Lock the deliveries first: a worker recording an attempt locks its delivery too (see
    # _record), so it either finished before (its attempt row is deleted below) or waits and
    # then finds no delivery; without the lock its attempt row could land between the two
    # deletes and break the foreign key.
    session.execute(deliveries.with_for_update()).all()
    session.execute(delete(models.DeliveryAttempt).where(models.DeliveryAttempt.delivery_id.in_(deliveries))
                    .execution_options(synchronize_session=False))
    session.execute(delete(models.Delivery).where(models.Delivery.webhook_id == hook.id)
                    .execution_options(synchronize_session=False))
    session.delete(hook)
    session.flush()
