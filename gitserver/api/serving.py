"""How the API runs under gunicorn: its settings, in one place for both ways of starting it.

``gitserver api`` (and ``serve``) run gunicorn in-process through :func:`run_gunicorn`;
operators who start gunicorn's own command line use ``etc/gunicorn.conf.py``, which takes the
same :func:`settings`. A test compares the two, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
from gunicorn.app.base import BaseApplication

from gitserver.api.worker import worker_class
from gitserver.config import Config

PROC_NAME = "gitserver-api"
# Threads per worker: handlers block on SQL and on git (smart HTTP streams a pack from a git
# child), and threads keep that simple while one process serves many clients.
THREADS = 8
# A clone over smart HTTP can stream for minutes; the timeout only catches hung workers.
TIMEOUT_SECONDS = 120
GRACEFUL_TIMEOUT_SECONDS = 30


def bind_address(config: Config) -> str:
    """Where the configuration says to listen (GITSERVER_HTTP_HOST / _PORT), an IPv6 host in
    brackets."""
    host, port = config.http_host, config.http_port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def settings(config: Config) -> dict[str, Any]:
    """gunicorn's settings for the API, by gunicorn's names."""
    return {
        "bind": bind_address(config),
        "workers": config.http_workers,
        # gthread with one change: the request head is read by the worker's event loop (at most
        # GITSERVER_HTTP_HEADER_TIMEOUT seconds), so slow clients hold no thread; see
        # gitserver/api/worker.py and docs/limits.md.
        "worker_class": worker_class(config.http_header_timeout, config.http_read_timeout),
        "threads": THREADS,
        "timeout": TIMEOUT_SECONDS,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        # Access logs come from gitserver's own request logging (JSON or text, with request ids).
        "accesslog": None,
        "proc_name": PROC_NAME,
        # gunicorn >= 25.1 opens a control socket at one path per user ($HOME/.gunicorn or
        # $XDG_RUNTIME_DIR): every API process of the host would take it from the others and
        # delete it when it stops. gitserver does not use it (older gunicorn has no such setting).
        "control_socket_disable": True,
    }


class Application(BaseApplication):
    """gunicorn run in this process with :func:`settings`, serving what ``load`` builds (in
    each gunicorn worker; the composition root, gitserver.cmd.wiring, hands it in)."""

    def __init__(self, config: Config, load: Callable[[], falcon.App]) -> None:
        self.config = config
        self.build = load
        super().__init__()

    def load_config(self) -> None:
        for name, value in settings(self.config).items():
            if name in self.cfg.settings:  # a setting this gunicorn does not know is left out
                self.cfg.set(name, value)

    def load(self) -> Any:
        return self.build()


def run_gunicorn(config: Config, load: Callable[[], falcon.App]) -> int:
    """Run the API under gunicorn in this process (``gitserver api``)."""
    Application(config, load).run()
    return 0
