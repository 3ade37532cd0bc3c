"""Logging setup: plain text or one JSON object per line, chosen by config.

Context (request or session id, tenant, user, repo) comes either from ``extra={...}`` on a log
call or from :func:`bind`, which sets it for the current thread/task (a contextvar), so code
deep in a request logs with the request's ids without passing them around.
Kafka shipping is added when its environment variables are set (see gitserver.observe.kafka_logs).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

from gitserver.config import Config

# Context fields a log call may pass with extra={...}; JSON lines carry them as keys.
CONTEXT_FIELDS = ("request_id", "session_id", "tenant", "user", "repo", "pipeline_id")

# The default is read-only: bind() always sets a new mapping, never changes the current one.
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "gitserver_log_context", default=types.MappingProxyType({}))


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add context fields to every record logged inside the ``with`` block."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context onto records that do not carry the field already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``time level component logger: message [key=value ...]``."""

    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
               if getattr(record, name, None) is not None]
        return f"{text} [{' '.join(ctx)}]" if ctx else text


def make_formatter(config: Config, component: str) -> logging.Formatter:
    return JsonFormatter(component) if config.log_format == "json" else TextFormatter(component)


def setup_logging(config: Config, component: str,
                  environ: Mapping[str, str] | None = None) -> None:
    """Log to stderr in the configured format; also to Kafka when its env vars are set."""
    from gitserver.observe import kafka_logs

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(config, component))
    handlers: list[logging.Handler] = [handler]
    # Kafka always gets JSON: it is read by machines.
    kafka = kafka_logs.handler_from_env(JsonFormatter(component), environ)
    if kafka is not None:
        handlers.append(kafka)
    for h in handlers:
        h.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, kafka_logs.KafkaHandler):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(config.log_level.upper())
    # asyncssh logs every packet-level event at INFO; keep it to warnings.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    # kafka-python is chatty while a broker is down; its records never go to Kafka anyway.
    logging.getLogger("kafka").setLevel(logging.WARNING)
