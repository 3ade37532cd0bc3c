"""Logging setup: plain text or one JSON object per line, chosen by config."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from gitserver.config import Config

# Context fields a log call may pass with extra={...}; JSON lines carry them as keys.
CONTEXT_FIELDS = ("request_id", "session_id", "tenant", "user", "repo", "pipeline_id")


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
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


def setup_logging(config: Config, component: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
    # asyncssh logs every packet-level event at INFO; keep it to warnings.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
