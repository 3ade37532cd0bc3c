"""Schemathesis against the live server's OpenAPI document: for every operation of the REST
API, generated requests (valid and invalid by the schema) never get a 5xx, and every response
conforms to the document (status code, content type, headers, body schema).

Bounded for CI: a few examples per operation and mode, SQLite only, the whole run well under a
minute. Half of the generated requests use path parameters of objects that exist (a seeded
tenant, user, group, repository, key, token, deploy key), so the fuzzer reaches the resources'
real code paths and not only their 404s.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.functional.conftest import GitServer

# Every operation of the /api/v1 document (admin API, pipelines, webhooks, archives) and the
# operational endpoints. Left out: smart HTTP (/git/…, binary git protocol bodies a schema
# cannot describe) and the Repour-compatible root endpoints, which start asynchronous clones
# of arbitrary origins on the shared test server's workers and have their own suite.
FUZZED = re.compile(r"^/(api/v1/.*|healthz|readyz|metrics)$")
EXAMPLES = 4
GUNICORN_URI_TOO_LONG = 414
GUNICORN_LINE_LIMIT = 4094  # gunicorn's default limit_request_line, in bytes
BUDGET_SECONDS = 60
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def seed(server: GitServer) -> dict[str, Any]:
    """Objects whose names the fuzzer may use as path parameters."""
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, grants={user.name: "write"})
    server.api("POST", f"/api/v1/tenants/{tenant}/groups", {"name": "fuzzers"})
    keys = server.api("GET", f"/api/v1/tenants/{tenant}/users/{user.name}/keys").json()["items"]
    tokens = server.api("GET", f"/api/v1/tenants/{tenant}/users/{user.name}/tokens").json()["items"]
    deploy = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/deploy-keys",
                        {"key": server.new_key("fuzz")[1]}).json()
    return {"tenant": tenant, "user": user.name, "repo": repo, "group": "fuzzers",
            "key_id": keys[0]["id"], "token_id": tokens[0]["id"], "deploy_key_id": deploy["id"]}


def test_fuzz_admin_api(server: GitServer) -> None:
    # The shared session server is reused (an indirect parametrization would tear it down and
    # start another); the PostgreSQL instance of it is skipped to keep CI bounded.
    if not server.db_url.startswith("sqlite"):
        pytest.skip("the fuzz run is bounded to SQLite; the other API tests cover PostgreSQL")
    schema = schemathesis.openapi.from_url(f"{server.http_url}/api/v1/openapi.json")
    schema = schema.include(path_regex=FUZZED.pattern)
    known = seed(server)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        fixed = {name: known[name] for name in re.findall(r"\{(\w+)\}", operation.path) if name in known}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = st.one_of(operation.as_strategy(generation_mode=mode),
                                 operation.as_strategy(generation_mode=mode, path_parameters=fixed))
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            failures += _run(operation, strategy, server.http_url, headers, checks, mode.value, statuses)
    elapsed = time.monotonic() - started
    print(f"fuzzed {operations} operations in {elapsed:.1f}s; responses by status: {dict(sorted(statuses.items()))}")
    assert statuses[200] + statuses[201] + statuses[204] > operations, "the fuzzer never got past validation"
    assert operations >= 30, f"only {operations} operations matched; is the document complete?"
    assert not failures, "\n\n".join(failures[:10])
    assert elapsed < BUDGET_SECONDS, f"fuzz run took {elapsed:.0f}s"


def _run(operation: Any, strategy: Any, base_url: str, headers: dict[str, str], checks: list[Any],
         mode: str, statuses: Counter[int]) -> list[str]:
    """Run one operation's examples; returns readable failures instead of stopping at the first."""
    failures: list[str] = []

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        if response.status_code == GUNICORN_URI_TOO_LONG and len(response.request.url) > GUNICORN_LINE_LIMIT:
            # gunicorn refuses request lines over its limit before the app sees them (an HTML
            # 414 of the HTTP server, not an answer of the API); nothing to check.
            return
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (collected, reported with the request)
            failures.append(f"{operation.method.upper()} {operation.path} [{mode}]: "
                            f"{type(exc).__name__}: {str(exc)[:1500]}\n  {case.as_curl_command()[:500]}")

    # Unsatisfiable: nothing in this operation can be made schema-invalid (negative mode), so
    # there is no case to run.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()
    return failures
