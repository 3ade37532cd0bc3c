"""Webhooks through the real server: a loopback receiver gets signed ``push`` and ``pipeline``
events after a real ``git push`` over SSH, failing receivers are retried with backoff, the
delivery log and redelivery work over the API, and loopback targets are refused unless the
server allows private networks."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection

from gitserver.pipelines import deliver, outbox
from gitserver.pipelines.deliver import verify_signature
from gitserver.policy.access import find_repo
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, make_repo, start_server
from tests.functional.test_api_fuzz import CHECKS, _run

SECRET = "It's a Secret to Everybody"
ZERO = "0" * 40


class Receiver:
    """An HTTP receiver on a free loopback port. ``script[path]`` lists the statuses to answer
    in turn (the last one repeats); every request is recorded."""

    def __init__(self) -> None:
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.script: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    statuses = receiver.script.get(self.path, [200])
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                receiver.requests.put({"path": self.path, "headers": dict(self.headers), "body": body,
                                       "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 60.0, what: str = "a delivery") -> dict[str, Any]:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the receiver got no request within {timeout}s ({what})") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def add_webhook(server: GitServer, tenant: str, repo: str, url: str, token: str | None = None,
                **fields: Any) -> dict[str, Any]:
    resp = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks",
                      json={"url": url, **fields}, token=token)
    assert resp.status_code == 201, resp.text
    return resp.json()


def setup(server: GitServer, git_env: dict[str, str], tmp_path: Path) -> tuple[str, str, User, Path]:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "work", git_env, {"README.md": "hello\n"})
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return tenant, repo, user, work


def head(work: Path, server: GitServer, user: User) -> str:
    return server.git(user, "rev-parse", "HEAD", cwd=work).stdout.strip()


def deliveries(server: GitServer, tenant: str, repo: str, hook_id: int,
               token: str | None = None) -> list[dict[str, Any]]:
    resp = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks/{hook_id}/deliveries",
                      token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def check_request(request: dict[str, Any], event: str, secret: str = SECRET) -> dict[str, Any]:
    """What any receiver checks: signature over the exact body, event, delivery id, agent."""
    headers = request["headers"]
    assert verify_signature(secret, request["body"], headers["X-Hub-Signature-256"])
    assert headers["X-Gitserver-Event"] == event
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("gitserver/")
    assert len(headers["X-Gitserver-Delivery"]) == 36
    return json.loads(request["body"])


def delivery_log(server: GitServer, tenant: str, repo: str, hook_id: int, delivery_id: int,
                 token: str | None = None) -> dict[str, Any]:
    resp = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks/{hook_id}/deliveries/{delivery_id}",
                      token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()


def check_stored_attempt(attempt: dict[str, Any], request: dict[str, Any]) -> None:
    """A stored attempt says what the receiver got: every header gitserver set, byte for byte
    (the transport adds Host, Content-Length, Accept…), the body's digest, the answer."""
    stored = attempt["request"]["headers"]
    assert {name: request["headers"].get(name) for name in stored} == stored
    assert {"X-Hub-Signature-256", "X-Gitserver-Delivery", "X-Gitserver-Event", "User-Agent",
            "Content-Type"} <= set(stored)
    assert attempt["request"]["body_sha256"] == hashlib.sha256(request["body"]).hexdigest()
    assert attempt["request"]["method"] == "POST" and attempt["request"]["url"].endswith(request["path"])
    assert attempt["response"]["status"] == request["status"]
    assert attempt["response"]["excerpt"] == f"answered {request['status']}"
    assert attempt["response"]["headers"]["Content-Type"] == "text/plain"


# --- on the shared server (SQLite and PostgreSQL) ---------------------------------------------

def test_push_and_pipeline_events_reach_a_loopback_receiver_signed(
        server: GitServer, git_env: dict[str, str], tmp_path: Path, receiver: Receiver) -> None:
    tenant, repo, user, work = setup(server, git_env, tmp_path)
    hook = add_webhook(server, tenant, repo, receiver.url + "/hook", token=user.token, secret=SECRET,
                       events=["push", "pipeline"])
    assert hook["has_secret"] is True and "secret" not in hook and hook["active"] is True
    commit = head(work, server, user)

    server.git(user, "push", "origin", "main", cwd=work)

    # Two deliveries, in either order: they are separate jobs and workers run them in parallel.
    got = {r["headers"]["X-Gitserver-Event"]: r for r in (receiver.next(what="push and pipeline events"),
                                                          receiver.next(what="the second event"))}
    assert sorted(got) == ["pipeline", "push"]
    first, second = got["push"], got["pipeline"]
    push = check_request(first, "push")
    assert push["event"] == "push"
    assert push["repository"] == {"tenant": tenant, "name": repo, "full_name": f"{tenant}/{repo}",
                                  "ssh_url": server.repo_url(tenant, repo)}
    assert push["ref_updates"] == [{"ref": "refs/heads/main", "old": ZERO, "new": commit}]
    assert push["pusher"]["name"] == user.name
    assert isinstance(push["push_id"], int) and isinstance(push["pipeline_id"], int)

    pipeline = check_request(second, "pipeline")
    assert pipeline["event"] == "pipeline"
    assert pipeline["repository"]["full_name"] == f"{tenant}/{repo}"
    assert pipeline["pipeline"]["id"] == push["pipeline_id"]
    assert pipeline["pipeline"]["status"] == "succeeded"
    assert pipeline["pipeline"]["ref"] == "refs/heads/main" and pipeline["pipeline"]["commit"] == commit
    assert pipeline["pipeline"]["archive_tag"].startswith("repour-")
    assert pipeline["pipeline"]["url"].endswith(f"/api/v1/pipelines/{push['pipeline_id']}")

    # The deliveries list, newest first, each delivered once, with the guid the receiver saw.
    def both_delivered() -> list[dict[str, Any]] | None:
        items = deliveries(server, tenant, repo, hook["id"], user.token)
        return items if len(items) == 2 and all(d["status"] == "delivered" for d in items) else None

    items = wait_for(both_delivered, timeout=20, what="both deliveries recorded as delivered")
    assert [d["event"] for d in items] == ["pipeline", "push"]
    assert [d["guid"] for d in items] == [second["headers"]["X-Gitserver-Delivery"],
                                          first["headers"]["X-Gitserver-Delivery"]]
    assert all(d["attempts"] == 1 and d["response_status"] == 200 and d["error"] == "" for d in items)

    # The stored log of the push delivery: the request exactly as sent, the answer, the attempt.
    log = delivery_log(server, tenant, repo, hook["id"], items[1]["id"], token=user.token)
    assert log["request"]["headers"]["X-Hub-Signature-256"] == first["headers"]["X-Hub-Signature-256"]
    assert log["request"]["body"] == push and log["request"]["method"] == "POST"
    assert log["response"] == {"status": 200, "excerpt": "answered 200"}
    assert len(log["log"]) == 1 and "delivered, HTTP 200" in log["log"][0]
    (attempt,) = log["attempt_log"]
    assert (attempt["number"], attempt["outcome"], attempt["error"]) == (1, "delivered", "")
    check_stored_attempt(attempt, first)


def test_redeliver_sends_the_same_payload_as_a_new_delivery(
        server: GitServer, git_env: dict[str, str], tmp_path: Path, receiver: Receiver) -> None:
    tenant, repo, user, work = setup(server, git_env, tmp_path)
    hook = add_webhook(server, tenant, repo, receiver.url + "/only-push", token=user.token,
                       secret=SECRET, events=["push"])
    server.git(user, "push", "origin", "main", cwd=work)
    original = receiver.next(what="push event")
    (delivery,) = wait_for(lambda: deliveries(server, tenant, repo, hook["id"]) or None, timeout=20,
                           what="the delivery row")
    resp = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks/{hook['id']}"
                              f"/deliveries/{delivery['id']}/redeliver", token=user.token)
    assert resp.status_code == 202, resp.text
    again = resp.json()
    assert again["id"] != delivery["id"] and again["guid"] != delivery["guid"]
    assert resp.headers["Location"].endswith(f"/deliveries/{again['id']}")
    repeat = receiver.next(what="redelivery")
    assert repeat["body"] == original["body"]
    assert repeat["headers"]["X-Gitserver-Delivery"] == again["guid"]
    check_request(repeat, "push")
    # Only push was subscribed: the pipeline's completion sent nothing here.
    with contextlib.suppress(AssertionError):
        extra = receiver.next(timeout=1.5, what="nothing")
        raise AssertionError(f"unexpected delivery {extra['headers'].get('X-Gitserver-Event')}")


def test_webhook_management_rules(server: GitServer, receiver: Receiver) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    reader = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={reader.name: "read"})
    outsider = server.new_user(server.new_tenant(), role="admin")
    base = f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks"
    hook = add_webhook(server, tenant, repo, receiver.url + "/x", token=admin.token, secret="abc")
    assert hook["events"] == ["push", "pipeline"]

    # Readers may see the repository but not its webhooks; other tenants cannot see it at all.
    assert server.api("GET", base, token=reader.token).status_code == 403
    assert server.api("POST", base, json={"url": receiver.url}, token=reader.token).status_code == 403
    hidden = server.api("GET", base, token=outsider.token)
    missing = server.api("GET", f"/api/v1/tenants/{tenant}/repos/nope/webhooks", token=outsider.token)
    assert hidden.status_code == 404 and hidden.json()["description"].replace(repo, "nope") == \
        missing.json()["description"]

    listed = server.api("GET", base, token=admin.token).json()
    assert listed["items"] == [hook] and listed["next"] is None
    assert "abc" not in json.dumps(listed)

    # Bad input names the field and the reason.
    for body, field, reason in [
        ({"url": "ftp://example.com/"}, "url", "scheme 'ftp' is not allowed"),
        ({"url": "http://user:pw@127.0.0.1/"}, "url", "credentials"),
        ({"url": "http://0.0.0.0:80/"}, "url", "unspecified"),
        ({"url": receiver.url, "events": ["tag"]}, "events", "push, pipeline"),
        ({"url": receiver.url, "events": []}, "events", "at least one"),
        ({"url": receiver.url, "active": "yes"}, "active", "boolean"),
        ({"url": receiver.url, "secret": 5}, "secret", "string"),
        ({"url": receiver.url, "color": "red"}, "color", "unknown field"),
        ({}, "url", "required"),
    ]:
        resp = server.api("POST", base, json=body, token=admin.token)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["field"] == field and reason in resp.json()["description"], (body, resp.text)

    # PATCH changes what it names; an empty secret removes it.
    one = f"{base}/{hook['id']}"
    resp = server.api("PATCH", one, json={"events": ["pipeline", "pipeline"], "active": False, "secret": ""},
                      token=admin.token)
    assert resp.status_code == 200, resp.text
    assert resp.json() | {"created_at": None} == hook | {"events": ["pipeline"], "active": False,
                                                        "has_secret": False, "created_at": None}
    assert server.api("PATCH", one, json={"url": "http://[::1"}, token=admin.token).json()["field"] == "url"
    assert server.api("GET", f"{base}/999999", token=admin.token).status_code == 404
    assert server.api("GET", f"{one}/deliveries/999999", token=admin.token).status_code == 404

    assert server.api("DELETE", one, token=admin.token).status_code == 204
    assert server.api("GET", one, token=admin.token).status_code == 404


# --- private servers: fast retries; private networks refused -----------------------------------

@pytest.fixture
def fast_retry_server(tmp_path: Path, db_url: str, git_env: dict[str, str]) -> Iterator[GitServer]:
    srv = start_server(tmp_path, db_url, git_env, extra_env={
        "GITSERVER_WEBHOOK_BACKOFF_BASE": "0.5", "GITSERVER_WEBHOOK_MAX_ATTEMPTS": "3",
        "GITSERVER_WEBHOOK_TIMEOUT": "5"})
    try:
        yield srv
    finally:
        srv.stop()


def test_failing_receiver_is_retried_then_given_up(
        fast_retry_server: GitServer, git_env: dict[str, str], tmp_path: Path, receiver: Receiver) -> None:
    server = fast_retry_server
    tenant, repo, user, work = setup(server, git_env, tmp_path)
    receiver.script = {"/flaky": [500, 200], "/down": [503]}
    flaky = add_webhook(server, tenant, repo, receiver.url + "/flaky", token=user.token, secret=SECRET,
                        events=["push"])
    down = add_webhook(server, tenant, repo, receiver.url + "/down", token=user.token, secret=SECRET,
                       events=["push"])
    server.git(user, "push", "origin", "main", cwd=work)

    seen: dict[str, list[dict[str, Any]]] = {"/flaky": [], "/down": []}
    while len(seen["/flaky"]) < 2 or len(seen["/down"]) < 3:
        request = receiver.next(timeout=30, what=f"retries (so far {[(k, len(v)) for k, v in seen.items()]})")
        seen[request["path"]].append(request)
    # Every attempt carries the same delivery id and the same signed body.
    for requests_ in seen.values():
        assert len({r["headers"]["X-Gitserver-Delivery"] for r in requests_}) == 1
        assert len({r["body"] for r in requests_}) == 1
        check_request(requests_[0], "push")
    assert [r["status"] for r in seen["/flaky"]] == [500, 200]

    def settled(hook_id: int, status: str) -> dict[str, Any] | None:
        items = deliveries(server, tenant, repo, hook_id, user.token)
        return items[0] if items and items[0]["status"] == status else None

    delivered = wait_for(lambda: settled(flaky["id"], "delivered"), timeout=20, what="flaky delivered")
    assert delivered["attempts"] == 2 and delivered["response_status"] == 200
    log = delivery_log(server, tenant, repo, flaky["id"], delivered["id"], token=user.token)
    assert len(log["log"]) == 2
    assert "receiver answered HTTP 500" in log["log"][0] and "delivered, HTTP 200" in log["log"][1]
    # The stored log: both attempts, each with the headers the receiver got.
    attempts = log["attempt_log"]
    assert [(a["number"], a["outcome"]) for a in attempts] == [(1, "retrying"), (2, "delivered")]
    for attempt, request in zip(attempts, seen["/flaky"], strict=True):
        check_stored_attempt(attempt, request)
    assert attempts[0]["error"] == "receiver answered HTTP 500" and attempts[1]["error"] == ""
    assert attempts[0]["started_at"] < attempts[1]["started_at"]

    # A new secret signs future deliveries; the log still shows the signature that was sent.
    resp = server.api("PATCH", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks/{flaky['id']}",
                      json={"secret": "a new secret"}, token=user.token)
    assert resp.status_code == 200, resp.text
    after = delivery_log(server, tenant, repo, flaky["id"], delivered["id"], token=user.token)
    assert after["attempt_log"] == attempts
    assert after["attempt_log"][0]["request"]["headers"]["X-Hub-Signature-256"] == \
        seen["/flaky"][0]["headers"]["X-Hub-Signature-256"]
    assert after["request"]["headers"]["X-Hub-Signature-256"] == seen["/flaky"][1]["headers"]["X-Hub-Signature-256"]

    failed = wait_for(lambda: settled(down["id"], "failed"), timeout=20, what="down failed")
    assert failed["attempts"] == 3 and failed["response_status"] == 503
    assert "receiver answered HTTP 503" in failed["error"]
    with contextlib.suppress(AssertionError):
        extra = receiver.next(timeout=2, what="nothing")
        raise AssertionError(f"attempt after giving up: {extra['path']}")


def test_private_targets_are_refused_unless_allowed(tmp_path: Path, git_env: dict[str, str]) -> None:
    # The address policy does not depend on the database: SQLite is enough here.
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'gitserver.db'}", git_env,
                          extra_env={"GITSERVER_ALLOW_PRIVATE_NETWORKS": "0"})
    try:
        tenant = server.new_tenant()
        repo = server.new_repo(tenant)
        base = f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks"
        for url, reason in [
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://localhost:9/hook", "loopback"),
            ("http://[::ffff:127.0.0.1]:9/", "loopback (IPv4-mapped IPv6)"),
            ("http://2130706433:9/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://10.0.0.1/", "private"),
            ("http://[fd00::1]/", "private"),
        ]:
            resp = server.api("POST", base, json={"url": url, "secret": "x"})
            assert resp.status_code == 400, (url, resp.text)
            body = resp.json()
            assert body["field"] == "url" and f"a {reason} address" in body["description"], (url, body)
        listed = server.api("GET", base).json()
        assert listed["items"] == []
    finally:
        server.stop()


# --- the OpenAPI document against the live server ----------------------------------------------

@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_fuzz_webhook_api(server: GitServer, receiver: Receiver) -> None:
    """Schemathesis over the webhook operations (the admin API's fuzz run leaves them to this
    file): no 5xx, every response as documented, schema-invalid requests refused."""
    tenant = server.new_tenant()
    repo = server.new_repo(tenant)
    hook = add_webhook(server, tenant, repo, receiver.url + "/fuzz", secret="x")
    with server.db() as session:
        (delivery,) = outbox.enqueue_event(session, _repo_id(session, tenant, repo), "push", {"push_id": None})
        delivery_id = delivery.id
        # One stored attempt, so the delivery log's responses include the attempt schema.
        out = deliver.Outbound(delivery_id=delivery.id, event="push", url=delivery.url, method="POST",
                              body=delivery.payload.encode(), headers={"X-Gitserver-Event": "push"},
                              kind="webhook")
        session.add(deliver.attempt_row(out, deliver.Attempt(
            number=1, started_at=deliver.utcnow(), seconds=0.01, status=500, excerpt="no", error="HTTP 500",
            request_headers=out.headers, response_headers={"Content-Type": "text/plain"}), "retrying"))
    known = {"tenant": tenant, "repo": repo, "webhook_id": hook["id"], "delivery_id": delivery_id}
    # The tenant's webhook operations get a tenant webhook and one of its deliveries.
    resp = server.api("POST", f"/api/v1/tenants/{tenant}/webhooks", json={"url": receiver.url + "/fuzz"})
    assert resp.status_code == 201, resp.text
    with server.db() as session:
        (tenant_delivery,) = outbox.enqueue_event(session, _repo_id(session, tenant, repo), "repository",
                                                  {"action": "created", "repository_id": None})
        known_tenant = {**known, "webhook_id": resp.json()["id"], "delivery_id": tenant_delivery.id}
    schema = schemathesis.openapi.from_url(f"{server.http_url}/api/v1/openapi.json")
    schema = schema.include(path_regex=r"/webhooks")
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    started = time.monotonic()
    # DELETE last: it removes the seeded webhook the other operations' examples use.
    ops = sorted((r.ok() for r in schema.get_all_operations()), key=lambda o: o.method.lower() == "delete")
    for operation in ops:
        operations += 1
        values = known if "{repo}" in operation.path else known_tenant
        fixed = {name: values[name] for name in re.findall(r"\{(\w+)\}", operation.path)}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = st.one_of(operation.as_strategy(generation_mode=mode),
                                 operation.as_strategy(generation_mode=mode, path_parameters=fixed))
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            failures += _run(operation, strategy, server.http_url, headers, checks, mode.value, statuses)
    print(f"fuzzed {operations} webhook operations; responses by status: {dict(sorted(statuses.items()))}")
    assert operations == 16, f"expected the 8 repository and 8 tenant webhook operations, found {operations}"
    assert not failures, "\n\n".join(failures[:10])
    assert statuses[200] + statuses[201] + statuses[202] + statuses[204] > 0
    assert time.monotonic() - started < 60


def _repo_id(session: Any, tenant: str, repo: str) -> int:
    row = find_repo(session, tenant, repo)
    assert row is not None
    return int(row.id)
