"""A delivery of a webhook or callback as the REST API shows it, read back from its stored rows
(nothing is recomputed): the Shapes that declare its JSON and its schema, and their rendering.

Sending is :mod:`gitserver.pipelines.deliver`'s, queueing :mod:`gitserver.pipelines.outbox`'s;
this module only reads what they stored.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.jsonshape import (
    DATETIME,
    INTEGER,
    NULLABLE_DATETIME,
    NULLABLE_INTEGER,
    STRING,
    STRING_MAP,
    STRINGS,
    Out,
    Shape,
    enum,
    nested,
)
from gitserver.pipelines.deliver import RESPONSE_HEADERS_MAX
from gitserver.pipelines.outbox import DELIVERED, FAILED, PENDING, RETRYING, delivery_attempts


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_lines(delivery: models.Delivery) -> list[str]:
    return [entry for entry in delivery.error.splitlines() if entry]


def _last_error(delivery: models.Delivery) -> str:
    lines = _error_lines(delivery)
    return lines[-1] if lines and delivery.status in (RETRYING, FAILED) else ""


DELIVERY = Shape("Delivery", {
    "id": Out(INTEGER), "guid": Out(STRING, "X-Gitserver-Delivery"), "event": Out(STRING),
    "status": Out(enum([PENDING, RETRYING, DELIVERED, FAILED])), "attempts": Out(INTEGER),
    "response_status": Out(NULLABLE_INTEGER),
    "error": Out(STRING, "why the last attempt failed (empty once delivered)", value=_last_error),
    "pipeline_id": Out(NULLABLE_INTEGER), "created_at": Out(DATETIME), "delivered_at": Out(NULLABLE_DATETIME)})

# One attempt, from its stored row: the request as sent and the answer as received.
_SENT = Shape("DeliveryAttemptRequest", {
    "method": Out(STRING, attr="request_method"), "url": Out(STRING, attr="request_url"),
    "headers": Out(STRING_MAP, "as sent, X-Hub-Signature-256 included; credentials shown as '***' "
                   "(Authorization: Bearer ***)", value=lambda row: _json_object(row.request_headers)),
    "body_sha256": Out(STRING, "hex SHA-256 of the body sent", attr="request_body_sha256")})
_RECEIVED = Shape("DeliveryAttemptResponse", {
    "status": Out(NULLABLE_INTEGER, "null when no answer came", attr="response_status"),
    "headers": Out(STRING_MAP, f"at most {RESPONSE_HEADERS_MAX} of the answer's headers, values cut, "
                   "cookies left out", value=lambda row: _json_object(row.response_headers)),
    "excerpt": Out(STRING, "first 2 KiB of the answer", attr="response_excerpt")})
DELIVERY_ATTEMPT = Shape("DeliveryAttempt", {
    "number": Out(INTEGER, "1 for the first attempt"), "started_at": Out(DATETIME), "duration_ms": Out(INTEGER),
    "outcome": Out(enum([DELIVERED, RETRYING, FAILED]), "what this attempt led to"),
    "request": nested(_SENT), "response": nested(_RECEIVED),
    "error": Out(STRING, "why the attempt failed; empty when delivered")})

# The delivery with its body, its last answer and every attempt.
_LOG_REQUEST = Shape("DeliveryLogRequest", {
    "method": Out(STRING), "url": Out(STRING),
    "headers": Out(STRING_MAP, "those of the latest attempt as sent (see attempt_log); empty before the "
                   "first attempt", given=True),
    "body": Out({}, "the JSON payload sent", given=True)})
_LOG_RESPONSE = Shape("DeliveryLogResponse", {
    "status": Out(NULLABLE_INTEGER, attr="response_status"),
    "excerpt": Out(STRING, "first 2 KiB of the last answer", attr="response_excerpt")})
DELIVERY_LOG = DELIVERY.extend("DeliveryLog", {
    "request": nested(_LOG_REQUEST, given=True), "response": nested(_LOG_RESPONSE),
    "log": Out(STRINGS, "one line per attempt: time, duration, outcome", value=_error_lines),
    "attempt_log": Out({"type": "array", "items": DELIVERY_ATTEMPT.ref()},
                       "every attempt as stored when it was made, oldest first", given=True)})


def delivery_summary(delivery: models.Delivery) -> dict[str, Any]:
    """A delivery as listed."""
    return DELIVERY.render(delivery)


def attempt_json(row: models.DeliveryAttempt) -> dict[str, Any]:
    return DELIVERY_ATTEMPT.render(row)


def delivery_log(session: Session, delivery: models.Delivery) -> dict[str, Any]:
    """A delivery as one is shown: the body, the last response, every attempt as stored.

    ``request.headers`` are those of the latest attempt as sent (empty before the first one):
    they are read back, never rebuilt, because a rebuilt signature would use the webhook's
    current secret rather than the one the receiver saw."""
    try:
        body: Any = json.loads(delivery.payload)
    except ValueError:
        body = delivery.payload
    attempts = [attempt_json(row) for row in delivery_attempts(session, delivery.id)]
    headers = attempts[-1]["request"]["headers"] if attempts else {}
    return DELIVERY_LOG.render(delivery, request=_LOG_REQUEST.render(delivery, headers=headers, body=body),
                               attempt_log=attempts)
