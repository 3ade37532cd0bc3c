"""Webhook and callback delivery: signing, backoff, outcomes (pure), and the outbox and job
handler on a real database (SQLite and PostgreSQL) with a fake transport."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from gitserver import config as config_mod
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.net import netguard
from gitserver.pipelines import deliver, deliverylog, jobs, outbox
from gitserver.runtime import Runtime
from tests.unit.conftest import make_runtime

# --- signing -----------------------------------------------------------------------------------

def test_signature_matches_githubs_documented_example() -> None:
    # docs.github.com "Validating webhook deliveries": this secret and body give this digest.
    assert deliver.sign("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_verify_signature() -> None:
    body = outbox.encode_payload({"event": "push", "n": 1}).encode()
    header = deliver.sign("s3cret", body)
    assert deliver.verify_signature("s3cret", body, header)
    assert not deliver.verify_signature("other", body, header)
    assert not deliver.verify_signature("s3cret", body + b" ", header)
    assert not deliver.verify_signature("s3cret", body, None)


def test_payload_encoding_is_compact_and_keeps_key_order() -> None:
    assert outbox.encode_payload({"b": 1, "a": [1, "é"]}) == '{"b":1,"a":[1,"\\u00e9"]}'


def test_request_headers() -> None:
    delivery = models.Delivery(guid="g-1", event="push", payload='{"event":"push"}')
    headers = deliver.request_headers(delivery, "k")
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": deliver.USER_AGENT,
        "X-Gitserver-Event": "push",
        "X-Gitserver-Delivery": "g-1",
        "X-Hub-Signature-256": deliver.sign("k", b'{"event":"push"}'),
    }
    assert deliver.USER_AGENT.startswith("gitserver/")
    assert "X-Hub-Signature-256" not in deliver.request_headers(delivery, "")


@pytest.mark.parametrize(("headers", "stored"), [
    ({"Authorization": "Bearer t0k.secret"}, {"Authorization": "Bearer ***"}),
    ({"authorization": "Basic dXNlcjpwdw=="}, {"authorization": "Basic ***"}),
    ({"Authorization": "justatoken"}, {"Authorization": "***"}),
    ({"Proxy-Authorization": "Bearer p"}, {"Proxy-Authorization": "Bearer ***"}),
    ({"Cookie": "session=abc"}, {"Cookie": "***"}),
    ({"X-Hub-Signature-256": "sha256=00", "X-Trace": "t"}, {"X-Hub-Signature-256": "sha256=00", "X-Trace": "t"}),
])
def test_credentials_are_redacted_in_the_log(headers: dict[str, str], stored: dict[str, str]) -> None:
    assert deliver.redact_headers(headers) == stored


def test_response_headers_are_a_bounded_subset() -> None:
    headers = {"Set-Cookie": "sid=1", "Content-Type": "text/plain", "X-Long": "v" * 5000,
               "X-Nul": "a\0b", **{f"X-H{i}": str(i) for i in range(50)}}
    kept = deliver.response_header_subset(headers)
    assert len(kept) == deliver.RESPONSE_HEADERS_MAX and "Set-Cookie" not in kept
    assert kept["Content-Type"] == "text/plain" and kept["X-Long"] == "v" * deliver.HEADER_VALUE_MAX
    assert kept["X-Nul"] == "a\ufffdb"
    assert list(kept)[-1] == f"X-H{deliver.RESPONSE_HEADERS_MAX - 4}"  # in the order received


# --- backoff and states ------------------------------------------------------------------------

@pytest.mark.parametrize(("attempt", "low", "high"), [
    (1, 5, 10), (2, 10, 20), (3, 20, 40), (6, 160, 320), (9, 1280, 2560), (12, 1800, 3600), (40, 1800, 3600),
])
def test_backoff_doubles_with_jitter_and_is_capped(attempt: int, low: float, high: float) -> None:
    assert deliver.backoff_delay(attempt, 10, 3600, rand=lambda: 0.0) == low
    assert deliver.backoff_delay(attempt, 10, 3600, rand=lambda: 1.0) == high
    assert low <= deliver.backoff_delay(attempt, 10, 3600) <= high


def _attempt(number: int, status: int | None = None, retryable: bool = True) -> deliver.Attempt:
    return deliver.Attempt(number=number, started_at=deliver.utcnow(), seconds=0.01, status=status,
                          retryable=retryable, error="" if status and status < 300 else "x")


@pytest.mark.parametrize(("attempt", "limit", "state"), [
    (_attempt(1, 200), 3, "delivered"),
    (_attempt(3, 204), 3, "delivered"),
    (_attempt(1, 500), 3, "retrying"),
    (_attempt(2, None), 3, "retrying"),
    (_attempt(3, 500), 3, "failed"),
    (_attempt(1, None, retryable=False), 3, "failed"),
    (_attempt(1, 302), 1, "failed"),
])
def test_next_state(attempt: deliver.Attempt, limit: int, state: str) -> None:
    assert deliver.next_state(attempt, limit) == state


@pytest.mark.parametrize(("headers", "message"), [
    ({"Bad Name": "x"}, "invalid header name"),
    ({"X-Ok": "a\r\nInjected: 1"}, "invalid value"),
    ({"Content-Type": "text/plain"}, "set by gitserver"),
    ({"x-hub-signature-256": "sha256=0"}, "set by gitserver"),
])
def test_callback_headers_are_checked(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        outbox.check_headers(headers)


# --- one attempt with a fake transport ----------------------------------------------------------

OUT = deliver.Outbound(delivery_id=1, event="push", url="http://hooks.example.com/", method="POST",
                      body=b"{}", headers={}, kind="webhook")


def answering(status: int, body: bytes = b"") -> Callable[..., netguard.Response]:
    def send(*_a: Any, **_k: Any) -> netguard.Response:
        return netguard.Response(status=status, headers={}, body=body, seconds=0.02, address="192.0.2.1")
    return send


def raising(exc: BaseException) -> Callable[..., netguard.Response]:
    def send(*_a: Any, **_k: Any) -> netguard.Response:
        raise exc
    return send


@pytest.mark.parametrize(("sender", "ok", "error", "reason", "retryable"), [
    (answering(200, b"thanks"), True, "", "", True),
    (answering(500, b"boom"), False, "receiver answered HTTP 500", "http_5xx", True),
    (answering(404), False, "receiver answered HTTP 404", "http_4xx", True),
    (answering(301), False, "receiver answered a redirect (not followed)", "http_3xx", True),
    (raising(requests.ConnectTimeout("slow")), False, "timed out after 3 s", "timeout", True),
    (raising(requests.ConnectionError("refused")), False, "connection failed: refused", "connection", True),
    (raising(netguard.UnsafeURL("host x is a loopback address")), False,
     "not sent: host x is a loopback address", "refused", False),
    (raising(netguard.UnsafeURL("host x does not resolve", retryable=True)), False,
     "not sent: host x does not resolve", "refused", True),
])
def test_perform_describes_the_outcome(sender: Any, ok: bool, error: str, reason: str, retryable: bool) -> None:
    attempt = deliver.perform(OUT, 2, timeout=3, allow_private=False, sender=sender)
    assert (attempt.ok, attempt.error, attempt.reason, attempt.retryable) == (ok, error, reason, retryable)
    assert attempt.number == 2
    assert attempt.log_line().startswith("attempt 2 at ")


def test_perform_keeps_an_excerpt_of_the_answer() -> None:
    attempt = deliver.perform(OUT, 1, timeout=3, allow_private=False,
                             sender=answering(500, b"\xffbad" + b"x" * 5000))
    assert attempt.status == 500 and len(attempt.excerpt) == 2048 and attempt.excerpt.startswith("\ufffdbad")


# --- the outbox and the handler on a database -----------------------------------------------------

@pytest.fixture()
def runtime(db_url: str, tmp_path: Any) -> Iterator[Runtime]:
    rt = make_runtime(db_url, tmp_path, webhook_max_attempts=3, webhook_backoff_base=2.0,
                      webhook_backoff_max=5.0)
    yield rt
    rt.dispose()


def _sample(name: str, **labels: str) -> float:
    """A counter's value in this process (the unit tests run without the multiprocess dir)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _repo_with_hooks(rt: Runtime) -> int:
    with transaction(rt.sessions) as session:
        tenant = models.Tenant(name="acme")
        session.add(tenant)
        session.flush()
        repo = models.Repository(tenant_id=tenant.id, name="widgets")
        session.add(repo)
        session.flush()
        session.add_all([
            models.Webhook(repo_id=repo.id, url="http://a.example.com/", secret="sa", events="push,pipeline"),
            models.Webhook(repo_id=repo.id, url="http://b.example.com/", secret="", events="pipeline"),
            models.Webhook(repo_id=repo.id, url="http://c.example.com/", secret="sc", events="push",
                           active=False),
        ])
        return repo.id


def _context(rt: Runtime, delivery: models.Delivery, attempts: int = 1) -> jobs.JobContext:
    with transaction(rt.sessions) as session:
        job = session.scalars(select(models.Job).order_by(models.Job.id.desc())).first()
        assert job is not None
        payload = json.loads(job.payload)
    assert payload["delivery_id"] == delivery.id
    return jobs.JobContext(runtime=rt, job_id=job.id, kind=job.kind, payload=payload,
                           attempts=attempts, pipeline_id=None)


def _delivery(rt: Runtime, delivery_id: int) -> models.Delivery:
    with transaction(rt.sessions) as session:
        row = session.get(models.Delivery, delivery_id)
        assert row is not None
        return row


def _attempts(rt: Runtime, delivery_id: int) -> list[models.DeliveryAttempt]:
    with transaction(rt.sessions) as session:
        return outbox.delivery_attempts(session, delivery_id)


def _log(rt: Runtime, delivery_id: int) -> dict[str, Any]:
    """The delivery as the API shows it."""
    with transaction(rt.sessions) as session:
        row = session.get(models.Delivery, delivery_id)
        assert row is not None
        return deliverylog.delivery_log(session, row)


def test_enqueue_event_creates_one_delivery_and_job_per_subscribed_active_hook(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        push = outbox.enqueue_event(session, repo_id, "push", {"push_id": 7, "pipeline_id": None})
        pipe = outbox.enqueue_event(session, repo_id, "pipeline", {"pipeline": {"id": None}})
        assert [d.url for d in push] == ["http://a.example.com/"]
        assert [d.url for d in pipe] == ["http://a.example.com/", "http://b.example.com/"]
        assert json.loads(push[0].payload) == {"event": "push", "push_id": 7, "pipeline_id": None}
        assert push[0].status == "pending" and push[0].method == "POST" and len(push[0].guid) == 36
        job_rows = session.scalars(select(models.Job).order_by(models.Job.id)).all()
        assert [j.kind for j in job_rows] == ["webhook"] * 3
        assert [json.loads(j.payload)["delivery_id"] for j in job_rows] == [d.id for d in push + pipe]
    with transaction(runtime.sessions) as session, pytest.raises(ValueError, match="unknown webhook event"):
        outbox.enqueue_event(session, repo_id, "tag", {})


def test_tenant_webhooks_get_every_repository_event_and_repository_events(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        repo = session.get(models.Repository, repo_id)
        assert repo is not None
        other = models.Tenant(name="other")
        session.add(other)
        session.flush()
        session.add_all([
            models.Webhook(tenant_id=repo.tenant_id, url="http://t.example.com/", events="push,repository"),
            models.Webhook(tenant_id=other.id, url="http://o.example.com/", events="push,repository")])
        session.flush()
        push = outbox.enqueue_event(session, repo_id, "push", {"push_id": 7})
        created = outbox.notify_repository(session, repo, "created")
        assert [d.url for d in push] == ["http://a.example.com/", "http://t.example.com/"]
        # Only tenant webhooks hear of repositories, and only their own tenant's.
        assert [(d.url, d.event) for d in created] == [("http://t.example.com/", "repository")]
        assert json.loads(created[0].payload) == {"action": "created", "repository_id": repo_id}
        body = outbox.render(session, runtime.config, "repository", json.loads(created[0].payload))
        assert set(body) == {"action", "repository"} and body["action"] == "created"
        assert body["repository"]["full_name"] == "acme/widgets" and body["repository"]["id"] == repo_id
        with pytest.raises(ValueError, match="unknown repository action"):
            outbox.notify_repository(session, repo, "renamed")


def test_failed_attempt_retries_with_backoff_then_delivers(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {"push_id": 1})
    seen: list[dict[str, Any]] = []

    def receiver(status: int) -> Callable[..., netguard.Response]:
        def send(method: str, url: str, *, body: bytes, headers: dict[str, str], **_k: Any) -> netguard.Response:
            seen.append({"method": method, "url": url, "body": body, "headers": headers})
            return netguard.Response(status=status, headers={"Content-Type": "text/plain", "X-Req": str(status)},
                                     body=b"answer %d" % status, seconds=0.01, address="192.0.2.1")
        return send

    retries_before = _sample("gitserver_deliveries_total", event="push", outcome="retry")
    with pytest.raises(jobs.RetryLater) as retry:
        deliver.run_delivery_job(_context(runtime, delivery, 1), sender=receiver(500))
    assert _sample("gitserver_deliveries_total", event="push", outcome="retry") == retries_before + 1
    assert 1.0 <= retry.value.delay <= 2.0 and "HTTP 500" in retry.value.message
    row = _delivery(runtime, delivery.id)
    assert (row.status, row.attempts, row.response_status, row.response_excerpt) == ("retrying", 1, 500, "answer 500")
    deliver.run_delivery_job(_context(runtime, delivery, 2), sender=receiver(200))
    row = _delivery(runtime, delivery.id)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 2, 200)
    assert row.delivered_at is not None
    log = row.error.splitlines()
    assert len(log) == 2 and "receiver answered HTTP 500" in log[0] and "delivered, HTTP 200" in log[1]
    # Same guid and signature on both attempts; the signature covers the exact body.
    assert seen[0]["headers"] == seen[1]["headers"]
    headers = seen[0]["headers"]
    assert headers["X-Gitserver-Delivery"] == row.guid and headers["X-Gitserver-Event"] == "push"
    assert deliver.verify_signature("sa", seen[0]["body"], headers["X-Hub-Signature-256"])
    assert json.loads(seen[0]["body"]) == {"event": "push", "push_id": 1}
    # One stored row per attempt: the headers exactly as the receiver got them, the answer.
    rows = _attempts(runtime, delivery.id)
    assert [(a.number, a.outcome, a.response_status) for a in rows] == [(1, "retrying", 500), (2, "delivered", 200)]
    for sent, stored in zip(seen, rows, strict=True):
        assert json.loads(stored.request_headers) == sent["headers"]
        assert (stored.request_method, stored.request_url) == ("POST", "http://a.example.com/")
        assert stored.request_body_sha256 == hashlib.sha256(sent["body"]).hexdigest()
        assert stored.duration_ms == 10 and stored.started_at.tzinfo is not None
    assert json.loads(rows[0].response_headers) == {"Content-Type": "text/plain", "X-Req": "500"}
    assert (rows[0].response_excerpt, rows[0].error) == ("answer 500", "receiver answered HTTP 500")
    assert (rows[1].response_excerpt, rows[1].error) == ("answer 200", "")
    shown = _log(runtime, delivery.id)
    assert [a["number"] for a in shown["attempt_log"]] == [1, 2]
    assert shown["attempt_log"][0]["request"]["headers"] == seen[0]["headers"]
    assert shown["request"]["headers"] == seen[1]["headers"] and shown["attempts"] == 2
    # A re-run after completion (a worker that lost its lease) sends nothing.
    deliver.run_delivery_job(_context(runtime, delivery, 3), sender=raising(AssertionError("sent twice")))
    assert len(_attempts(runtime, delivery.id)) == 2


def test_the_log_keeps_the_signature_sent_after_the_secret_changes(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {"push_id": 1})
    seen: list[dict[str, str]] = []

    def send(*_a: Any, headers: dict[str, str], **_k: Any) -> netguard.Response:
        seen.append(dict(headers))
        return netguard.Response(status=500, headers={}, body=b"", seconds=0.01, address="192.0.2.1")

    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 1), sender=send)
    with transaction(runtime.sessions) as session:
        session.get(models.Webhook, delivery.webhook_id).secret = "rotated"  # type: ignore[union-attr]
    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 2), sender=send)
    first, second = (a["request"]["headers"]["X-Hub-Signature-256"] for a in _log(runtime, delivery.id)["attempt_log"])
    assert first == seen[0]["X-Hub-Signature-256"] and second == seen[1]["X-Hub-Signature-256"]
    body = _delivery(runtime, delivery.id).payload.encode()
    assert first == deliver.sign("sa", body) and second == deliver.sign("rotated", body)


def test_an_attempt_after_another_worker_finished_is_still_logged(runtime: Runtime) -> None:
    # A worker that lost its lease mid-request: the one that took over delivered meanwhile. The
    # receiver got both requests, so both are in the log; the delivery stays as finished.
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {"push_id": 1})
    ctx = _context(runtime, delivery, 1)

    def late(*_a: Any, **_k: Any) -> netguard.Response:
        deliver.run_delivery_job(_context(runtime, delivery, 2), sender=answering(200, b"first"))
        return netguard.Response(status=503, headers={}, body=b"late", seconds=0.01, address="192.0.2.1")

    deliver.run_delivery_job(ctx, sender=late)  # no RetryLater: the delivery is already final
    row = _delivery(runtime, delivery.id)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 2, 200)
    assert [(a.number, a.response_status) for a in _attempts(runtime, delivery.id)] == [(1, 503), (2, 200)]


def test_a_binary_answer_is_stored_on_every_backend(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {})
    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 1), sender=answering(500, b"\x00\x01 nul"))
    (attempt,) = _attempts(runtime, delivery.id)
    assert attempt.response_excerpt == "\ufffd\x01 nul" == _delivery(runtime, delivery.id).response_excerpt


def test_deleting_a_webhook_deletes_its_delivery_log(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {})
    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 1), sender=answering(500))
    with transaction(runtime.sessions) as session:
        outbox.delete_webhook(session, session.get(models.Webhook, delivery.webhook_id))  # type: ignore[arg-type]
    assert _attempts(runtime, delivery.id) == []
    with transaction(runtime.sessions) as session:
        assert session.get(models.Delivery, delivery.id) is None


def test_last_attempt_fails_the_delivery(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {})
    failures_before = _sample("gitserver_deliveries_total", event="push", outcome="failed")
    with pytest.raises(deliver.DeliveryFailed, match="failed after 3 attempt"):
        deliver.run_delivery_job(_context(runtime, delivery, 3),
                                sender=raising(requests.ConnectionError("refused")))
    row = _delivery(runtime, delivery.id)
    assert row.status == "failed" and "connection failed" in row.error
    assert _sample("gitserver_deliveries_total", event="push", outcome="failed") == failures_before + 1
    (attempt,) = _attempts(runtime, delivery.id)
    assert (attempt.number, attempt.outcome, attempt.response_status) == (3, "failed", None)
    assert attempt.error == "connection failed: refused" and json.loads(attempt.response_headers) == {}


def test_refused_target_fails_at_once(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {})
    with pytest.raises(deliver.DeliveryFailed, match="loopback"):
        deliver.run_delivery_job(_context(runtime, delivery, 1),
                                sender=raising(netguard.UnsafeURL("host a is a loopback address")))
    assert _delivery(runtime, delivery.id).status == "failed"


def test_deactivated_webhook_stops_its_pending_deliveries(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {})
        session.get(models.Webhook, delivery.webhook_id).active = False  # type: ignore[union-attr]
    deliver.run_delivery_job(_context(runtime, delivery), sender=raising(AssertionError("sent")))
    row = _delivery(runtime, delivery.id)
    assert row.status == "failed" and "deactivated" in row.error
    assert _attempts(runtime, delivery.id) == []  # nothing was sent


def test_callback_is_a_delivery_without_webhook(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        delivery = outbox.enqueue_callback(session, "http://build.example.com/cb", "put", {"callback": {"id": "x"}},
                                           headers={"Authorization": "Bearer t0k"})
        assert (delivery.webhook_id, delivery.event, delivery.method) == (None, "callback", "PUT")
    seen: list[dict[str, str]] = []

    def send(method: str, url: str, *, headers: dict[str, str], **_k: Any) -> netguard.Response:
        seen.append({"method": method, **headers})
        return netguard.Response(status=200, headers={}, body=b"", seconds=0.01, address="192.0.2.1")

    ctx = _context(runtime, delivery)
    assert ctx.kind == "callback"
    delivered_before = _sample("gitserver_deliveries_total", event="callback", outcome="delivered")
    deliver.run_delivery_job(ctx, sender=send)
    assert _sample("gitserver_deliveries_total", event="callback", outcome="delivered") == delivered_before + 1
    assert seen[0]["method"] == "PUT" and seen[0]["Authorization"] == "Bearer t0k"
    assert "X-Hub-Signature-256" not in seen[0] and seen[0]["X-Gitserver-Event"] == "callback"
    assert _delivery(runtime, delivery.id).status == "delivered"
    # The log keeps every header as sent but the bearer token.
    (attempt,) = _attempts(runtime, delivery.id)
    stored = json.loads(attempt.request_headers)
    assert stored["Authorization"] == "Bearer ***" and attempt.request_method == "PUT"
    assert stored == {k: v for k, v in seen[0].items() if k != "method"} | {"Authorization": "Bearer ***"}
    assert "t0k" not in attempt.request_headers


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "GET"}, "callback method"),
    ({"url": "ftp://x/"}, "scheme 'ftp'"),
    ({"headers": {"Host": "x"}}, "set by gitserver"),
    ({"auth": "os:system"}, "one of service-token"),
    ({"auth": "gitserver.pipelines.repour:service_token_headers"}, "one of service-token"),
])
def test_enqueue_callback_refuses_bad_input(runtime: Runtime, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"url": "http://build.example.com/cb", "method": "POST", "payload": {}, **kwargs}
    with transaction(runtime.sessions) as session, pytest.raises(ValueError, match=message):
        outbox.enqueue_callback(session, **args)


def test_redeliver_copies_payload_with_a_new_guid(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {"push_id": 3})
        session.get(models.Webhook, delivery.webhook_id).url = "http://fixed.example.com/"  # type: ignore[union-attr]
        again = outbox.redeliver(session, delivery)
        assert again.payload == delivery.payload and again.guid != delivery.guid
        assert again.url == "http://fixed.example.com/"
        assert (again.webhook_id, again.status, again.attempts) == (delivery.webhook_id, "pending", 0)
        log = deliverylog.delivery_log(session, again)
        # Nothing sent yet: no headers to show (they are never rebuilt), no attempts.
        assert (log["request"]["headers"], log["attempt_log"], log["log"]) == ({}, [], [])
        assert log["request"]["body"] == {"event": "push", "push_id": 3}


def test_first_attempt_renders_the_documented_shape_from_the_rows(runtime: Runtime) -> None:
    repo_id = _repo_with_hooks(runtime)
    with transaction(runtime.sessions) as session:
        user = models.User(tenant_id=session.get(models.Repository, repo_id).tenant_id,  # type: ignore[union-attr]
                           name="alice", role="member")
        session.add(user)
        session.flush()
        push = models.Push(repo_id=repo_id, user_id=user.id, key_fingerprint="SHA256:k")
        push.ref_updates = [models.RefUpdate(ref="refs/heads/main", old="0" * 40, new="a" * 40)]
        session.add(push)
        session.flush()
        pipeline = models.Pipeline(repo_id=repo_id, push_id=push.id, ref="refs/heads/main", commit="a" * 40,
                                   status="succeeded", archive_tag="repour-" + "b" * 40)
        session.add(pipeline)
        session.flush()
        # A producer that names the push its own way.
        (delivery,) = outbox.enqueue_event(session, repo_id, "push", {"push": {"id": push.id}})
        push_id, pipeline_id = push.id, pipeline.id
    sent: list[bytes] = []

    def send(method: str, url: str, *, body: bytes, **_k: Any) -> netguard.Response:
        sent.append(body)
        return netguard.Response(status=500, headers={}, body=b"", seconds=0.01, address="192.0.2.1")

    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 1), sender=send)
    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery, 2), sender=send)
    assert sent[0] == sent[1]
    body = json.loads(sent[0])
    config = runtime.config
    assert body == {
        "event": "push",
        "repository": {"tenant": "acme", "name": "widgets", "full_name": "acme/widgets",
                       "ssh_url": f"{config.ssh_base_url}/acme/widgets.git"},
        "pusher": {"kind": "user", "name": "alice", "tenant": "acme", "key_fingerprint": "SHA256:k",
                   "protocol": "ssh", "certificate": None},
        "ref_updates": [{"ref": "refs/heads/main", "old": "0" * 40, "new": "a" * 40}],
        "push_options": [],
        "push_id": push_id,
        "pipeline_id": pipeline_id,
    }
    assert _delivery(runtime, delivery.id).payload == sent[0].decode()
    with transaction(runtime.sessions) as session:
        rendered = outbox.render(session, config, "pipeline", {"pipeline_id": pipeline_id})
    assert rendered["pipeline"] | {"started_at": None} == {
        "id": pipeline_id, "status": "succeeded", "ref": "refs/heads/main", "commit": "a" * 40,
        "archive_tag": "repour-" + "b" * 40, "url": f"{config.http_base_url}/api/v1/pipelines/{pipeline_id}",
        "error": "", "started_at": None, "finished_at": None}
    assert rendered["repository"]["full_name"] == "acme/widgets"


def test_a_failing_header_function_fails_the_attempt_without_sending() -> None:
    # A provider that raises stands in for a token endpoint that is down.
    def down(_config: config_mod.Config) -> dict[str, str]:
        raise ConnectionError("token endpoint down")

    out = dataclasses.replace(OUT, auth=outbox.CREDENTIALS_SERVICE_TOKEN)
    attempt = deliver._attempt(out, 1, config_mod.load(environ={}), raising(AssertionError("sent")),
                              {outbox.CREDENTIALS_SERVICE_TOKEN: down})
    assert not attempt.ok and attempt.reason == "auth" and attempt.retryable
    assert attempt.error == "not sent: could not get credentials (ConnectionError: token endpoint down)"


def test_credentials_this_worker_lacks_fail_the_attempt_without_sending() -> None:
    out = dataclasses.replace(OUT, auth=outbox.CREDENTIALS_SERVICE_TOKEN)
    attempt = deliver._attempt(out, 1, config_mod.load(environ={}), raising(AssertionError("sent")), {})
    assert not attempt.ok and attempt.reason == "auth" and attempt.retryable
    assert "no 'service-token' credentials" in attempt.error


def test_failed_callback_attempts_are_counted_by_reason(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        delivery = outbox.enqueue_callback(session, "http://build.example.com/cb", "POST", {"ok": False})
    before = _sample("gitserver_callback_failures_total", reason="connection")
    with pytest.raises(jobs.RetryLater):
        deliver.run_delivery_job(_context(runtime, delivery), sender=raising(requests.ConnectionError("down")))
    assert _sample("gitserver_callback_failures_total", reason="connection") == before + 1
    assert _delivery(runtime, delivery.id).status == "retrying"
