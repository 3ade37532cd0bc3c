"""Log formats, bound context, and the Kafka handler's behaviour when the broker is down."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from gitserver import config
from gitserver.observe import kafka_logs, logs


def _record(msg: str = "hello %s", args: tuple = ("world",), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gitserver.ssh.session", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_carries_the_context_fields() -> None:
    line = logs.JsonFormatter("ssh").format(_record(session_id="s1", tenant="acme", user="ann", repo="web"))
    data = json.loads(line)
    assert data["message"] == "hello world"
    assert data["level"] == "INFO" and data["logger"] == "gitserver.ssh.session"
    assert data["component"] == "ssh"
    assert (data["session_id"], data["tenant"], data["user"], data["repo"]) == ("s1", "acme", "ann", "web")
    assert data["time"].endswith("+00:00")
    assert "\n" not in line


def test_bind_adds_context_to_records_inside_the_block() -> None:
    context_filter = logs.ContextFilter()
    with logs.bind(request_id="r-9", tenant="acme"):
        inside = _record()
        context_filter.filter(inside)
    outside = _record()
    context_filter.filter(outside)
    assert inside.request_id == "r-9" and inside.tenant == "acme"  # type: ignore[attr-defined]
    assert not hasattr(outside, "request_id")
    text = logs.TextFormatter("api").format(inside)
    assert text.endswith("hello world [request_id=r-9 tenant=acme]")


def test_bind_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="colour"), logs.bind(colour="red"):
        pass


def test_setup_logging_json_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config.load(environ={}, data_dir=tmp_path, log_format="json")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup_logging(cfg, "worker", environ={})
        assert not any(isinstance(h, kafka_logs.KafkaHandler) for h in root.handlers)
        with logs.bind(pipeline_id=7):
            logging.getLogger("gitserver.test").warning("step %d failed", 2)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    data = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert data["message"] == "step 2 failed" and data["pipeline_id"] == 7


def test_no_kafka_without_both_variables() -> None:
    assert kafka_logs.settings({}) is None
    assert kafka_logs.settings({"GITSERVER_KAFKA_SERVER": "k:9092"}) is None
    assert kafka_logs.handler_from_env(logs.JsonFormatter("x"), {"GITSERVER_KAFKA_TOPIC": "t"}) is None
    assert not any(t.name == "kafka-logs" for t in threading.enumerate())


def test_kafka_settings_sasl_and_tls() -> None:
    sasl = kafka_logs.settings({
        "GITSERVER_KAFKA_SERVER": "a:9092, b:9092", "GITSERVER_KAFKA_TOPIC": "logs",
        "GITSERVER_KAFKA_SASL_USERNAME": "u", "GITSERVER_KAFKA_SASL_PASSWORD": "p",
        "GITSERVER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GITSERVER_KAFKA_CONNECTIONS_MAX_IDLE_MS": "60000"})
    assert sasl == {"topic": "logs", "bootstrap_servers": ["a:9092", "b:9092"],
                    "connections_max_idle_ms": 60000, "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "u",
                    "sasl_plain_password": "p"}
    tls = kafka_logs.settings({"GITSERVER_KAFKA_SERVER": "a:9093", "GITSERVER_KAFKA_TOPIC": "logs",
                               "GITSERVER_KAFKA_CAFILE": "/etc/ca.pem"})
    assert tls == {"topic": "logs", "bootstrap_servers": ["a:9093"], "security_protocol": "SSL",
                   "ssl_cafile": "/etc/ca.pem"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dropped_metric() -> float:
    from prometheus_client import REGISTRY

    from gitserver.observe import metrics

    metrics.log_dropped("kafka", 0)  # defines the metric in this process
    return REGISTRY.get_sample_value("gitserver_log_records_dropped_total", {"sink": "kafka"}) or 0.0


def test_kafka_down_never_blocks_and_counts_drops() -> None:
    """A broker that refuses connections: logging stays fast, the queue stays bounded."""
    metric_before = _dropped_metric()
    handler = kafka_logs.KafkaHandler(
        {"topic": "logs", "bootstrap_servers": [f"127.0.0.1:{_closed_port()}"],
         "security_protocol": "PLAINTEXT"}, queue_size=20, retry_seconds=0.2, connect_timeout=1.0)
    handler.setFormatter(logs.JsonFormatter("ssh"))
    try:
        start = time.monotonic()
        for i in range(500):
            handler.emit(_record("line %d", (i,)))
        elapsed = time.monotonic() - start
        assert elapsed < 0.5, f"emit took {elapsed:.2f}s for 500 records"
        assert handler.queue.qsize() <= 20
        # The sender may hold one record while it retries; the rest that did not fit are dropped.
        assert handler.dropped >= 500 - 20 - 1
        assert handler.sent == 0
        assert _dropped_metric() - metric_before == handler.dropped
        # The client library's own records never loop back into the queue.
        before = handler.queue.qsize()
        handler.emit(logging.LogRecord("kafka.conn", logging.ERROR, __file__, 1, "down", (), None))
        assert handler.queue.qsize() == before
    finally:
        handler.close()
    handler._thread.join(timeout=10)
    assert not handler._thread.is_alive(), "close() stops the sender thread"
