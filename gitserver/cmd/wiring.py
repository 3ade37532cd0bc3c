"""The composition root of the long-running parts: each front built from its parts, by name.

The API gets its route modules and the worker its job handlers here, in code a reader can
follow with grep, from a route or a job kind to the function that serves it. Nothing below this
module imports Repour in order to wire it, and each long-running process creates its one ``Runtime`` here
(one-shot commands create theirs in ``gitserver.cli``).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import falcon

from gitserver.config import Config
from gitserver.pipelines import jobs
from gitserver.runtime import Runtime


def route_modules() -> tuple[ModuleType, ...]:
    """The modules that mount routes, each with ``add_routes(app, ctx)`` and its own
    ``OPENAPI_PATHS``/``OPENAPI_SCHEMAS``. Add a module here to mount it."""
    from gitserver.api import app, bundles, lfs, lfs_locks, smart_http
    from gitserver.api.resources import (
        attestations,
        groups,
        maintenance,
        pipelines,
        repos,
        signing_keys,
        ssh_cas,
        tenants,
        user_signing,
        users,
        webhooks,
    )
    from gitserver.api.resources import metrics as metrics_routes
    from gitserver.api.resources import rules as rule_routes
    from gitserver.repour import resources as repour

    return (app, metrics_routes, tenants, users, user_signing, ssh_cas, groups, repos, rule_routes, maintenance,
            pipelines, webhooks, smart_http, bundles, lfs, lfs_locks, repour, signing_keys, attestations)


def job_handlers() -> dict[str, jobs.Handler]:
    """Every job kind and the function that runs it."""
    from gitserver.pipelines import deliver, maintain, outbox, push
    from gitserver.repour import job as repour_job
    from gitserver.repour import tokens

    # Where a callback's fresh headers come from, by the name its job stores.
    credentials: dict[str, deliver.Credentials] = {
        outbox.CREDENTIALS_SERVICE_TOKEN: tokens.service_token_headers,
    }
    assert set(credentials) == set(outbox.CREDENTIALS), "a credentials name without a function"
    handlers: dict[str, jobs.Handler] = {
        jobs.JobKind.PIPELINE: push.run_pipeline_job,
        jobs.JobKind.WEBHOOK: deliver.run_delivery_job,
        jobs.JobKind.CALLBACK: functools.partial(deliver.run_delivery_job, credentials=credentials),
        jobs.JobKind.REPOUR: repour_job.run_repour_job,
        jobs.JobKind.MAINTAIN: maintain.run_maintain_job,
    }
    assert set(handlers) == set(jobs.KINDS), "a job kind without a handler (or the reverse)"
    return handlers


def api_app(runtime: Runtime) -> falcon.App:
    """The falcon application of the REST API, smart HTTP, the Repour endpoints and the web
    console (pages for people under /ui/, outside the OpenAPI document)."""
    from gitserver.api.app import create_app
    from gitserver.console import routes as console

    app = create_app(runtime, route_modules())
    console.add_routes(app, runtime)
    return app


def get_app() -> Any:
    """The WSGI app for gunicorn (``gitserver.cmd.wiring:get_app()``), configured from the environment."""
    from gitserver import config as config_mod
    from gitserver.process import depwarnings

    depwarnings.quiet()
    return api_app(Runtime.create(config_mod.load()))


def run_api(config: Config) -> int:
    """``gitserver api``: gunicorn in this process; each of its workers builds the app anew."""
    from gitserver.api.serving import run_gunicorn

    return run_gunicorn(config, lambda: api_app(Runtime.create(config)))


def run_ssh(config: Config) -> int:
    """``gitserver ssh``: the SSH daemon until SIGTERM/SIGINT."""
    from gitserver.ssh import server

    runtime = Runtime.create(config)
    try:
        return server.run(runtime)
    finally:
        runtime.dispose()


def run_worker(config: Config, concurrency: int | None = None) -> int:
    """``gitserver worker``: job threads until SIGTERM/SIGINT."""
    from gitserver.pipelines import worker

    n = max(1, concurrency if concurrency is not None else config.workers)
    runtime = Runtime.create(config, pool_size=n + 2)
    try:
        return worker.run(runtime, job_handlers(), n)
    finally:
        runtime.dispose()

