"""Sending webhooks and callbacks: the worker's side of the outbox.

Producers queue deliveries with :mod:`gitserver.pipelines.outbox` (a ``Delivery`` row and a
job of kind ``webhook`` or ``callback``). A worker runs :func:`run_delivery_job` on each job,
which sends one attempt and

* on a 2xx answer marks the delivery ``delivered``;
* otherwise records the status, the first 2 KiB of the answer and the error, and raises
  :class:`~gitserver.pipelines.jobs.RetryLater` with an exponential backoff (state
  ``retrying``), until ``webhook_max_attempts`` → ``failed``.

Request: the JSON body stored in ``Delivery.payload``, byte for byte (a webhook event's body is
built in its documented shape by :func:`~gitserver.pipelines.outbox.render` just before the
first attempt, where the configuration is at hand); headers
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the webhook secret>`` (when the
webhook has a secret), ``X-Gitserver-Event``, ``X-Gitserver-Delivery`` (the delivery guid, the
same on every retry so receivers can de-duplicate), ``User-Agent: gitserver/<version>`` and
``Content-Type: application/json``. Targets are checked by :mod:`gitserver.net.netguard` on every
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
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import requests
from sqlalchemy.orm import Session

from gitserver import __version__
from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.net import netguard
from gitserver.observe import metrics
from gitserver.pipelines import jobs, outbox

if TYPE_CHECKING:
    from gitserver.pipelines.jobs import JobContext

log = logging.getLogger(__name__)

USER_AGENT = f"gitserver/{__version__}"
CONTENT_TYPE = "application/json"

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


class DeliveryFailed(Exception):
    """The last attempt of a delivery failed; the delivery row already says so. Raised from
    the job handler so the job, too, ends ``failed`` with this message."""


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
        outbox.EVENT_HEADER: delivery.event,
        outbox.DELIVERY_HEADER: delivery.guid,
    }
    if secret:
        headers[outbox.SIGNATURE_HEADER] = sign(secret, delivery.payload.encode("utf-8"))
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
    auth: str | None = None  # where fresh headers come from (outbox.CREDENTIALS), just before sending


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
        return outbox.DELIVERED
    if not attempt.retryable or attempt.number >= limit:
        return outbox.FAILED
    return outbox.RETRYING


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
    if delivery.status in outbox.FINAL:
        return None  # a worker that lost its lease finished it already
    secret = ""
    if delivery.webhook_id is not None:
        hook = session.get(models.Webhook, delivery.webhook_id)
        if hook is None or not hook.active:
            delivery.status = outbox.FAILED
            delivery.error = append_log(delivery.error, f"not sent: the webhook was "
                                        f"{'deleted' if hook is None else 'deactivated'}")
            return None
        secret = hook.secret
        if delivery.attempts == 0:
            # First attempt: fix the body in its documented shape (see outbox.render); retries and
            # redeliveries send exactly these bytes again.
            data = json.loads(delivery.payload)
            if isinstance(data, dict):
                rendered = outbox.render(session, ctx.runtime.config, delivery.event, data)
                delivery.payload = outbox.encode_payload(rendered)
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
            fresh = outbox.check_headers(provider(config))
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
    if delivery.status in outbox.FINAL:
        return False
    delivery.status = state
    delivery.attempts = attempt.number
    delivery.response_status = attempt.status
    delivery.response_excerpt = attempt.excerpt
    delivery.error = append_log(delivery.error, _storable(attempt.log_line()))
    if state == outbox.DELIVERED:
        delivery.delivered_at = utcnow()
    return True


def run_delivery_job(ctx: JobContext, sender: Sender = netguard.send,
                     credentials: Mapping[str, Credentials] | None = None) -> None:
    """Job handler of kinds ``webhook`` and ``callback``: one attempt of one delivery.

    ``sender`` is the transport (tests pass a fake); ``credentials`` maps each name of
    :data:`~gitserver.pipelines.outbox.CREDENTIALS` to the function that gives fresh headers (the worker wires it)."""
    config = ctx.runtime.config
    with transaction(ctx.runtime.sessions) as session:
        out = _load(session, ctx)
    if out is None:
        return
    ceiling = ctx.payload.get("max_attempts", outbox.MAX_ATTEMPTS_CEILING)
    limit = max(1, min(config.webhook_max_attempts,
                       ceiling if isinstance(ceiling, int) else outbox.MAX_ATTEMPTS_CEILING))
    attempt = _attempt(out, ctx.attempts, config, sender, credentials or {})
    state = next_state(attempt, limit)
    with transaction(ctx.runtime.sessions) as session:
        recorded = _record(session, out, attempt, state)
    _count(out, attempt, state)
    if not recorded:
        return
    if state == outbox.DELIVERED:
        log.info("delivery %s (%s %s) delivered on attempt %d in %.0f ms", out.delivery_id,
                 out.event, out.url, attempt.number, attempt.seconds * 1000)
    elif state == outbox.RETRYING:
        delay = backoff_delay(attempt.number, config.webhook_backoff_base, config.webhook_backoff_max)
        raise jobs.RetryLater(delay, f"delivery {out.delivery_id}: {attempt.error}; "
                                     f"retrying in {delay:.1f} s")
    else:
        # The worker logs this once and stores it as the job's last_error.
        raise DeliveryFailed(f"delivery {out.delivery_id} ({out.event} to {out.url}) failed after "
                             f"{attempt.number} attempt(s): {attempt.error}")


def _count(out: Outbound, attempt: Attempt, state: str) -> None:
    outcome = {outbox.DELIVERED: "delivered", outbox.RETRYING: "retry", outbox.FAILED: "failed"}[state]
    metrics.delivery_attempt(out.event, outcome, attempt.seconds)
    if out.kind == jobs.JobKind.CALLBACK and not attempt.ok:
        metrics.callback_failed(attempt.reason)
