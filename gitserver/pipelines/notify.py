"""Webhooks and callbacks: the outbox (``Delivery`` rows + queue jobs) and sending it.

Producers call :func:`enqueue_event` (webhook events ``push`` and ``pipeline``, and
``repository`` for tenant webhooks, see :func:`notify_repository`) or
:func:`enqueue_callback` (Repour-style callbacks) inside their own transaction: the delivery
row and its job become visible with the event that caused them, or not at all. A worker runs
:func:`run_delivery_job` (job kinds ``webhook`` and ``callback``), which sends one attempt and

* on a 2xx answer marks the delivery ``delivered``;
* otherwise records the status, the first 2 KiB of the answer and the error, and raises
  :class:`~gitserver.pipelines.jobs.RetryLater` with an exponential backoff (state
  ``retrying``), until ``webhook_max_attempts`` → ``failed``.

Request: the JSON body stored in ``Delivery.payload``, byte for byte (a webhook event's body is
built in its documented shape by :func:`render` just before the first attempt, where the
configuration is at hand); headers
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the webhook secret>`` (when the
webhook has a secret), ``X-Gitserver-Event``, ``X-Gitserver-Delivery`` (the delivery guid, the
same on every retry so receivers can de-duplicate), ``User-Agent: gitserver/<version>`` and
``Content-Type: application/json``. Targets are checked by :mod:`gitserver.netguard` on every
attempt (DNS can change) and the connection is pinned to the checked address.

The delivery log: every attempt is a :class:`~gitserver.db.models.DeliveryAttempt` row, written
in the transaction that updates the delivery after the request: URL, method, the request headers
exactly as sent (the signature made with the secret of that moment, so a later change of the
webhook's secret does not rewrite history; credentials such as ``Authorization`` redacted, see
:func:`redact_headers`), the SHA-256 of the body, the status, a bounded subset of the response
headers, the first 2 KiB of the answer, the error and the outcome. ``Delivery.error`` keeps one
summary line per attempt (time, duration, outcome), and ``response_status``/``response_excerpt``
are those of the last answer, for the list view.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from gitserver import __version__, metrics, netguard
from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.pipelines import jobs
from gitserver.urls import http_clone_url, pipeline_url, ssh_clone_url

if TYPE_CHECKING:
    from gitserver.pipelines.jobs import JobContext

log = logging.getLogger(__name__)

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
KIND_WEBHOOK = "webhook"
KIND_CALLBACK = "callback"
CALLBACK_METHODS = ("POST", "PUT")

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-Gitserver-Event"
DELIVERY_HEADER = "X-Gitserver-Delivery"
USER_AGENT = f"gitserver/{__version__}"
CONTENT_TYPE = "application/json"
# Headers a callback producer may not set: they are gitserver's or the transport's.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    SIGNATURE_HEADER, EVENT_HEADER, DELIVERY_HEADER, "User-Agent", "Content-Type",
    "Content-Length", "Host", "Transfer-Encoding", "Connection"))
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")

# Delivery states.
PENDING, RETRYING, DELIVERED, FAILED = "pending", "retrying", "delivered", "failed"
FINAL = (DELIVERED, FAILED)

EXCERPT_BYTES = 2048
LOG_MAX_LINES = 50
# The delivery log keeps a bounded part of each answer's headers: a receiver's headers are not
# ours to bound, and a few (content type, request id, Retry-After) are all a reader needs.
RESPONSE_HEADERS_MAX = 20
HEADER_NAME_MAX = 100
HEADER_VALUE_MAX = 256
# Credentials never reach the delivery log: the log is readable by every repository admin,
# the credentials (a callback's bearer token, say) are not theirs. The auth scheme is kept.
REDACTED = "***"
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
_SECRET_HEADERS = frozenset({"cookie", "set-cookie"})
# The worker gives up on a job after the payload's "max_attempts" (jobs.DEFAULT_MAX_ATTEMPTS
# otherwise) without telling the handler; the handler must make that decision itself so the
# delivery row says "failed". So jobs carry this ceiling and the handler stops at
# min(config.webhook_max_attempts, ceiling) attempts.
MAX_ATTEMPTS_CEILING = 25


class DeliveryFailed(Exception):
    """The last attempt of a delivery failed; the delivery row already says so. Raised from
    the job handler so the job, too, ends ``failed`` with this message."""


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
        "kind": "user" if user is not None else "deploy_key",
        "name": user.name if user is not None else None,
        "tenant": user.tenant.name if user is not None else None,
        "key_fingerprint": push.key_fingerprint,
        "protocol": push.protocol,
    }
    return {
        "event": EVENT_PUSH,
        "repository": repository_json(repo, config.ssh_base_url),
        "pusher": pusher,
        "ref_updates": [{"ref": u.ref, "old": u.old, "new": u.new} for u in push.ref_updates],
        "push_options": json.loads(push.push_options or "[]"),
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


# --- signing, headers, backoff (pure) -----------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def request_headers(delivery: models.Delivery, secret: str = "",
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of a delivery's request (the same on every attempt)."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: delivery.guid,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, delivery.payload.encode("utf-8"))
    headers.update(extra or {})
    return headers


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as the delivery log stores them: credentials replaced by ``***`` (keeping an
    ``Authorization`` scheme: ``Bearer ***``), everything else (the signature included) as is."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _CREDENTIAL_HEADERS:
            scheme, space, _credentials = value.strip().partition(" ")
            out[name] = f"{scheme} {REDACTED}" if space else REDACTED
        elif lower in _SECRET_HEADERS:
            out[name] = REDACTED
        else:
            out[name] = value
    return out


def response_header_subset(headers: Mapping[str, str]) -> dict[str, str]:
    """The part of an answer's headers the delivery log keeps: at most
    :data:`RESPONSE_HEADERS_MAX` of them in the order received, names and values cut to a bound,
    cookies left out (they are the receiver's credentials)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if len(out) >= RESPONSE_HEADERS_MAX:
            break
        if name.lower() in _SECRET_HEADERS:
            continue
        out[_storable(name)[:HEADER_NAME_MAX]] = _storable(str(value))[:HEADER_VALUE_MAX]
    return out


def _storable(text: str) -> str:
    """``text`` without NUL characters, which PostgreSQL text columns cannot hold (a receiver
    may answer anything)."""
    return text.replace("\0", "\ufffd")


def backoff_delay(attempt: int, base: float, cap: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): ``base * 2**(attempt-1)``,
    at most ``cap``, with "equal jitter" (between half and all of it) so receivers that failed
    together are not retried together."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + rand() * delay / 2


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
                          body=body, pipeline_id=pipeline_id, kind=KIND_WEBHOOK)
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
                         body=encode_payload(payload), pipeline_id=pipeline_id, kind=KIND_CALLBACK,
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
                         pipeline_id=delivery.pipeline_id, kind=KIND_WEBHOOK)


# --- one attempt ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outbound:
    """Everything needed to send one attempt, read from the database before sending (no
    session is held open across the network call)."""

    delivery_id: int
    event: str
    url: str
    method: str
    body: bytes
    headers: dict[str, str]
    kind: str
    auth: str | None = None  # where fresh headers come from (CREDENTIALS), just before sending


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt."""

    number: int
    started_at: dt.datetime
    seconds: float
    status: int | None = None
    excerpt: str = ""
    error: str = ""
    reason: str = ""          # short machine label of a failure: http_5xx, timeout, refused, ...
    retryable: bool = True
    # The headers handed to the transport (unredacted: redact_headers before storing them) and
    # those of the answer, if one came.
    request_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    response_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def log_line(self) -> str:
        when = self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        outcome = f"delivered, HTTP {self.status}" if self.ok else self.error
        return f"attempt {self.number} at {when} ({self.seconds * 1000:.0f} ms): {outcome}"


Sender = Callable[..., netguard.Response]
# Fresh headers for one attempt, from the configuration (e.g. a cached bearer token).
Credentials = Callable[[Config], Mapping[str, str]]


def perform(out: Outbound, number: int, *, timeout: float, allow_private: bool,
            sender: Sender = netguard.send) -> Attempt:
    """Send one attempt and describe what happened (never raises for network trouble)."""
    started_at = utcnow()
    t0 = time.monotonic()

    def failed(error: str, reason: str, retryable: bool = True) -> Attempt:
        return Attempt(number=number, started_at=started_at, seconds=time.monotonic() - t0,
                       error=error, reason=reason, retryable=retryable, request_headers=dict(out.headers))

    try:
        resp = sender(out.method, out.url, body=out.body, headers=out.headers, timeout=timeout,
                      allow_private=allow_private, max_body=EXCERPT_BYTES)
    except netguard.UnsafeURL as exc:
        return failed(f"not sent: {exc.message}", "refused", retryable=exc.retryable)
    except requests.Timeout:
        return failed(f"timed out after {timeout:g} s", "timeout")
    except requests.ConnectionError as exc:
        return failed(f"connection failed: {_short(exc)}", "connection")
    except requests.RequestException as exc:
        return failed(f"request failed: {_short(exc)}", "request")
    excerpt = _storable(resp.body[:EXCERPT_BYTES].decode("utf-8", "replace"))
    attempt = Attempt(number=number, started_at=started_at, seconds=resp.seconds,
                      status=resp.status, excerpt=excerpt, request_headers=dict(out.headers),
                      response_headers=dict(resp.headers))
    if attempt.ok:
        return attempt
    what = "a redirect (not followed)" if 300 <= resp.status < 400 else f"HTTP {resp.status}"
    return dataclasses.replace(attempt, error=f"receiver answered {what}",
                               reason=f"http_{resp.status // 100}xx")


def _short(exc: BaseException) -> str:
    """A one-line reason from requests' nested exceptions (the innermost says most)."""
    inner: BaseException = exc
    while inner.__cause__ is not None or (inner.args and isinstance(inner.args[0], BaseException)):
        inner = inner.__cause__ or inner.args[0]
    text = str(inner).splitlines()[0] if str(inner) else type(inner).__name__
    return text[:300]


def next_state(attempt: Attempt, limit: int) -> str:
    """``delivered``, ``retrying`` or ``failed`` after ``attempt`` (pure)."""
    if attempt.ok:
        return DELIVERED
    if not attempt.retryable or attempt.number >= limit:
        return FAILED
    return RETRYING


def append_log(existing: str, line: str) -> str:
    lines = [entry for entry in existing.splitlines() if entry]
    lines.append(line)
    return "\n".join(lines[-LOG_MAX_LINES:])


# --- the job handler ---------------------------------------------------------------------------

def _load(session: Session, ctx: JobContext) -> Outbound | None:
    """Read what the attempt sends; None when there is nothing (left) to send."""
    delivery_id = ctx.payload.get("delivery_id")
    delivery = session.get(models.Delivery, delivery_id) if isinstance(delivery_id, int) else None
    if delivery is None:
        log.warning("job %s: delivery %r no longer exists; nothing to send", ctx.job_id, delivery_id)
        return None
    if delivery.status in FINAL:
        return None  # a worker that lost its lease finished it already
    secret = ""
    if delivery.webhook_id is not None:
        hook = session.get(models.Webhook, delivery.webhook_id)
        if hook is None or not hook.active:
            delivery.status = FAILED
            delivery.error = append_log(delivery.error, f"not sent: the webhook was "
                                        f"{'deleted' if hook is None else 'deactivated'}")
            return None
        secret = hook.secret
        if delivery.attempts == 0:
            # First attempt: fix the body in its documented shape (see render); retries and
            # redeliveries send exactly these bytes again.
            data = json.loads(delivery.payload)
            if isinstance(data, dict):
                delivery.payload = encode_payload(render(session, ctx.runtime.config, delivery.event, data))
    auth = ctx.payload.get("auth")
    return Outbound(delivery_id=delivery.id, event=delivery.event, url=delivery.url,
                    method=delivery.method, body=delivery.payload.encode("utf-8"),
                    headers=request_headers(delivery, secret, ctx.payload.get("headers") or {}),
                    kind=ctx.kind, auth=auth if isinstance(auth, str) else None)


def _attempt(out: Outbound, number: int, config: Config, sender: Sender,
             credentials: Mapping[str, Credentials]) -> Attempt:
    """Add the producer's fresh headers (a token fetched over the network, so outside any
    transaction), then send."""
    if out.auth is not None:
        try:
            provider = credentials.get(out.auth)
            if provider is None:
                raise LookupError(f"this worker has no {out.auth!r} credentials")
            fresh = check_headers(provider(config))
        except Exception as exc:  # noqa: BLE001  (the provider's failure is this attempt's failure)
            log.warning("delivery %s: credentials %s failed: %s", out.delivery_id, out.auth, exc)
            return Attempt(number=number, started_at=utcnow(), seconds=0.0, reason="auth",
                           error=f"not sent: could not get credentials ({type(exc).__name__}: {exc})",
                           request_headers=dict(out.headers))
        out = dataclasses.replace(out, headers={**out.headers, **fresh})
    return perform(out, number, timeout=config.webhook_timeout,
                   allow_private=config.allow_private_networks, sender=sender)


def attempt_row(out: Outbound, attempt: Attempt, outcome: str) -> models.DeliveryAttempt:
    """The delivery-log row of one attempt: the request as it went out (credentials redacted)
    and what came back."""
    return models.DeliveryAttempt(
        delivery_id=out.delivery_id, number=attempt.number, started_at=attempt.started_at,
        duration_ms=round(attempt.seconds * 1000), request_url=out.url, request_method=out.method,
        request_headers=json.dumps(redact_headers(attempt.request_headers)),
        request_body_sha256=hashlib.sha256(out.body).hexdigest(),
        response_status=attempt.status,
        response_headers=json.dumps(response_header_subset(attempt.response_headers)),
        response_excerpt=attempt.excerpt, error=_storable(attempt.error), outcome=outcome)


def _record(session: Session, out: Outbound, attempt: Attempt, state: str) -> bool:
    """Store the attempt; False when another worker already finished the delivery.

    The attempt's row is written whenever the delivery still exists, even when another worker
    finished it meanwhile (this one had lost its lease): the receiver did get this request, so
    the log shows it."""
    delivery = session.get(models.Delivery, out.delivery_id, with_for_update=True)
    if delivery is None:
        return False
    session.add(attempt_row(out, attempt, state))
    if delivery.status in FINAL:
        return False
    delivery.status = state
    delivery.attempts = attempt.number
    delivery.response_status = attempt.status
    delivery.response_excerpt = attempt.excerpt
    delivery.error = append_log(delivery.error, _storable(attempt.log_line()))
    if state == DELIVERED:
        delivery.delivered_at = utcnow()
    return True


def run_delivery_job(ctx: JobContext, sender: Sender = netguard.send,
                     credentials: Mapping[str, Credentials] | None = None) -> None:
    """Job handler of kinds ``webhook`` and ``callback``: one attempt of one delivery.

    ``sender`` is the transport (tests pass a fake); ``credentials`` maps each name of
    :data:`CREDENTIALS` to the function that gives fresh headers (the worker wires it)."""
    config = ctx.runtime.config
    with transaction(ctx.runtime.sessions) as session:
        out = _load(session, ctx)
    if out is None:
        return
    ceiling = ctx.payload.get("max_attempts", MAX_ATTEMPTS_CEILING)
    limit = max(1, min(config.webhook_max_attempts,
                       ceiling if isinstance(ceiling, int) else MAX_ATTEMPTS_CEILING))
    attempt = _attempt(out, ctx.attempts, config, sender, credentials or {})
    state = next_state(attempt, limit)
    with transaction(ctx.runtime.sessions) as session:
        recorded = _record(session, out, attempt, state)
    _count(out, attempt, state)
    if not recorded:
        return
    if state == DELIVERED:
        log.info("delivery %s (%s %s) delivered on attempt %d in %.0f ms", out.delivery_id,
                 out.event, out.url, attempt.number, attempt.seconds * 1000)
    elif state == RETRYING:
        delay = backoff_delay(attempt.number, config.webhook_backoff_base, config.webhook_backoff_max)
        raise jobs.RetryLater(delay, f"delivery {out.delivery_id}: {attempt.error}; "
                                     f"retrying in {delay:.1f} s")
    else:
        # The worker logs this once and stores it as the job's last_error.
        raise DeliveryFailed(f"delivery {out.delivery_id} ({out.event} to {out.url}) failed after "
                             f"{attempt.number} attempt(s): {attempt.error}")


def _count(out: Outbound, attempt: Attempt, state: str) -> None:
    outcome = {DELIVERED: "delivered", RETRYING: "retry", FAILED: "failed"}[state]
    metrics.delivery_attempt(out.event, outcome, attempt.seconds)
    if out.kind == KIND_CALLBACK and not attempt.ok:
        metrics.callback_failed(attempt.reason)


# --- reading deliveries back (the API's delivery log) ------------------------------------------

def delivery_attempts(session: Session, delivery_id: int) -> list[models.DeliveryAttempt]:
    """The attempt rows of a delivery, oldest first (by number; by id between two workers'
    attempts of the same number)."""
    return list(session.scalars(
        select(models.DeliveryAttempt).where(models.DeliveryAttempt.delivery_id == delivery_id)
        .order_by(models.DeliveryAttempt.number, models.DeliveryAttempt.id)))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def attempt_json(row: models.DeliveryAttempt) -> dict[str, Any]:
    """One attempt as the API shows it, from its stored row (nothing is recomputed)."""
    return {
        "number": row.number, "started_at": row.started_at, "duration_ms": row.duration_ms,
        "outcome": row.outcome,
        "request": {"method": row.request_method, "url": row.request_url,
                    "headers": _json_object(row.request_headers), "body_sha256": row.request_body_sha256},
        "response": {"status": row.response_status, "headers": _json_object(row.response_headers),
                     "excerpt": row.response_excerpt},
        "error": row.error,
    }


def delivery_log(session: Session, delivery: models.Delivery) -> dict[str, Any]:
    """A delivery as the API shows it: the body, the last response, every attempt as stored.

    ``request.headers`` are those of the latest attempt as sent (empty before the first one):
    they are read back, never rebuilt, because a rebuilt signature would use the webhook's
    current secret rather than the one the receiver saw."""
    try:
        body: Any = json.loads(delivery.payload)
    except ValueError:
        body = delivery.payload
    lines = [entry for entry in delivery.error.splitlines() if entry]
    attempts = [attempt_json(row) for row in delivery_attempts(session, delivery.id)]
    return {
        **delivery_summary(delivery),
        "request": {"method": delivery.method, "url": delivery.url,
                    "headers": attempts[-1]["request"]["headers"] if attempts else {}, "body": body},
        "response": {"status": delivery.response_status, "excerpt": delivery.response_excerpt},
        "log": lines,
        "attempt_log": attempts,
    }


def delivery_summary(delivery: models.Delivery) -> dict[str, Any]:
    lines = [entry for entry in delivery.error.splitlines() if entry]
    last_error = lines[-1] if lines and delivery.status in (RETRYING, FAILED) else ""
    return {"id": delivery.id, "guid": delivery.guid, "event": delivery.event,
            "status": delivery.status, "attempts": delivery.attempts,
            "response_status": delivery.response_status, "error": last_error,
            "pipeline_id": delivery.pipeline_id, "created_at": delivery.created_at,
            "delivered_at": delivery.delivered_at}


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
