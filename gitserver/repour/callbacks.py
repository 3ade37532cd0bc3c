"""Callback mode: which callback a result goes to, with which headers (the callback's own and
the request's log/trace context), and its queued delivery (retried by the callback job)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from gitserver.config import Config
from gitserver.pipelines import outbox
from gitserver.repour import reqour

# Repour's callback ids: 30 random bytes in base32, 48 characters, no padding.
CALLBACK_ID_BYTES = 30

def new_callback_id() -> str:
    return base64.b32encode(secrets.token_bytes(CALLBACK_ID_BYTES)).decode("ascii")


# Request headers PNC sends for its log and trace context; passed on to the callback (and into
# the pipeline log), as Repour and Reqour do, so PNC's log aggregation ties them together.
CONTEXT_HEADERS = ("log-user-id", "log-request-context", "log-process-context", "log-expires", "log-tmp",
                   "process-context-variant", "trace-id", "span-id", "traceparent", "tracestate")
CONTEXT_VALUE_MAX = 1000


def request_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The context headers of a request (names lower-case); values that could not be sent
    again as a header (line breaks, control characters, too long) are left out."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    out = {}
    for name in CONTEXT_HEADERS:
        value = lowered.get(name)
        if isinstance(value, str) and value.strip() and len(value) <= CONTEXT_VALUE_MAX \
                and value.isprintable():
            out[name] = value.strip()
    return out


def callback_target(spec: Mapping[str, Any], status: int) -> dict[str, Any] | None:
    """The callback to call for a result with ``status``: ``positiveCallback`` for a success and
    ``negativeCallback`` for a failure when given, else ``callback``. Legacy ``{url, method}``
    or pnc-api's ``Request`` (``{uri, method, headers: [{name, value}], attachment}``)."""
    if status == 200 and spec.get("positiveCallback"):
        chosen = spec["positiveCallback"]
    elif status != 200 and spec.get("negativeCallback"):
        chosen = spec["negativeCallback"]
    else:
        chosen = spec.get("callback")
    if not isinstance(chosen, Mapping):
        return None
    url = chosen.get("url") or chosen.get("uri")
    if not url:
        return None
    return {"url": str(url), "method": str(chosen.get("method") or "POST"),
            "headers": callback_headers(chosen.get("headers"))}


def callback_headers(headers: Any) -> dict[str, str]:
    """pnc-api's ``[{"name", "value"}]`` as a dict. Headers gitserver sets itself (Content-Type,
    Content-Length, ...) are left out: PNC's requests carry ``Content-Type: application/json``,
    which the callback has anyway."""

    out: dict[str, str] = {}
    for item in headers or ():
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)):
            continue
        if item["name"].lower() not in outbox.RESERVED_HEADERS:
            out[item["name"]] = item["value"]
    return out


def context_text(context: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in context.items())


def is_callback_mode(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("callback")) or bool(spec.get("positiveCallback") and spec.get("negativeCallback"))


def enqueue_callback(session: Session, config: Config, spec: Mapping[str, Any], status: int | None,
                     body: Mapping[str, Any], callback_id: str, pipeline_id: int | None,
                     context: Mapping[str, str] | None = None, face: str = "repour",
                     op_name: str = "") -> None:
    """Queue the delivery of the result (retried with backoff by the callback job), with the
    callback's own headers and the request's log/trace ``context`` headers; in Reqour's shape
    when the request came in Reqour's (``face``)."""
    target = callback_target(spec, status or 0)
    if target is None:
        return
    if face == reqour.FACE:
        payload = reqour.callback_body(op_name, spec, status, body)
    else:
        payload = {**body, "callback": {"status": status, "id": callback_id}}
    # With a token endpoint configured, each attempt asks for the (cached) service account
    # token, so a retry an hour later does not carry an expired one.
    auth = outbox.CREDENTIALS_SERVICE_TOKEN if service_token_allowed(config, target["url"]) else None
    outbox.enqueue_callback(session, target["url"], target["method"], payload, pipeline_id=pipeline_id,
                            auth=auth, headers={**(context or {}), **target["headers"]})


def service_token_allowed(config: Config, url: str) -> bool:
    """Whether a callback to ``url`` may carry the service account's bearer token.

    The caller of /clone or /adjust (anyone who may write one repository) chooses the callback
    URL; attaching the token to every callback would hand the server's identity to any host
    they name. It goes only to hosts in ``oidc_callback_hosts``."""
    if not (config.oidc_token_url and config.oidc_client_id):
        return False
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return bool(host) and host in {h.lower() for h in config.oidc_callback_hosts}
