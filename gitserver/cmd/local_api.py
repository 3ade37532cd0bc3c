"""The CLI's admin commands on the server host: the REST API built in this process.

Without ``--url`` a command of :mod:`gitserver.client` runs against this app, on the data dir
and database of the configuration, as the operator (who could write the database directly):
the same resources, checks, errors and JSON as a remote server, so a command has one
definition and the two forms answer alike. No socket is opened; falcon's WSGI simulator
hands the request to the app and the answer back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import falcon.testing

from gitserver.api.app import create_app
from gitserver.client.transport import Reply
from gitserver.cmd import wiring
from gitserver.config import Config
from gitserver.policy import access
from gitserver.runtime import Runtime

OPERATOR = access.Principal(kind=access.PrincipalKind.SITE_ADMIN, user_name="operator")
# Routes a one-shot command never calls: /metrics would set up the process's metrics files.
SKIPPED_MODULES = ("gitserver.api.resources.metrics",)


class LocalApi:
    """A :class:`~gitserver.client.transport.Transport` into an in-process API app."""

    def __init__(self, config: Config) -> None:
        self.runtime = Runtime.create(config, pool_size=1)
        modules = [m for m in wiring.route_modules() if m.__name__ not in SKIPPED_MODULES]
        self.app = create_app(self.runtime, modules, operator=OPERATOR)

    def request(self, method: str, path: str, *, body: Any = None,
                params: Mapping[str, str] | None = None) -> Reply:
        result = falcon.testing.simulate_request(self.app, method, path, json=body, params=dict(params or {}))
        headers = {name.lower(): value for name, value in result.headers.items()}
        return Reply(result.status_code, headers, result.text)

    def close(self) -> None:
        self.runtime.dispose()
