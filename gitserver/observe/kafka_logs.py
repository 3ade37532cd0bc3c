"""Optional shipping of log lines to Kafka, never on the git traffic's critical path.

Only when ``GITSERVER_KAFKA_SERVER`` and ``GITSERVER_KAFKA_TOPIC`` are set. These are
deployment variables, not Config fields; :func:`settings` is the one place that reads them.

:class:`KafkaHandler.emit` only formats the record and puts it on a bounded queue
(``put_nowait``); a full queue drops the record and counts it
(``gitserver_log_records_dropped_total{sink="kafka"}``). A daemon thread owns the producer,
connects lazily and retries with backoff, so a broker outage costs the logging caller
nothing but the drop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

QUEUE_SIZE = 10000
_STOP = object()


def settings(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """kafka-python producer arguments plus ``topic``, or None when shipping is off (pure)."""
    env = os.environ if environ is None else environ
    server, topic = env.get("GITSERVER_KAFKA_SERVER", ""), env.get("GITSERVER_KAFKA_TOPIC", "")
    if not server or not topic:
        return None
    out: dict[str, Any] = {
        "topic": topic,
        "bootstrap_servers": [s.strip() for s in server.split(",") if s.strip()],
    }
    idle = env.get("GITSERVER_KAFKA_CONNECTIONS_MAX_IDLE_MS")
    if idle:
        out["connections_max_idle_ms"] = int(idle)
    user, password = env.get("GITSERVER_KAFKA_SASL_USERNAME"), env.get("GITSERVER_KAFKA_SASL_PASSWORD")
    if user and password:
        out.update(security_protocol="SASL_SSL" if env.get("GITSERVER_KAFKA_CAFILE") else "SASL_PLAINTEXT",
                   sasl_mechanism=env.get("GITSERVER_KAFKA_SASL_MECHANISM") or "PLAIN",
                   sasl_plain_username=user, sasl_plain_password=password)
        if env.get("GITSERVER_KAFKA_CAFILE"):
            out["ssl_cafile"] = env["GITSERVER_KAFKA_CAFILE"]
    else:
        out["security_protocol"] = "SSL"
        if env.get("GITSERVER_KAFKA_CAFILE"):
            out["ssl_cafile"] = env["GITSERVER_KAFKA_CAFILE"]
    return out


class KafkaHandler(logging.Handler):
    """A logging handler with a bounded queue and a background sender thread."""

    def __init__(self, producer_args: dict[str, Any], queue_size: int = QUEUE_SIZE,
                 retry_seconds: float = 5.0, connect_timeout: float = 5.0) -> None:
        super().__init__()
        args = dict(producer_args)
        self.topic = args.pop("topic")
        self.producer_args = args
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout
        self.dropped = 0
        self.sent = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-logs", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # The client library's own records would loop back through this handler.
        if record.name.startswith("kafka"):
            return
        try:
            line = self.format(record).encode("utf-8")
            self.queue.put_nowait(line)
        except queue.Full:
            self._drop(1)
        except Exception:  # noqa: BLE001  (logging must never raise into the caller)
            self.handleError(record)

    def _drop(self, n: int) -> None:
        self.dropped += n
        try:
            from gitserver.observe import metrics

            metrics.log_dropped("kafka", n)
        except Exception:  # noqa: BLE001  (a metric is not worth an exception in logging)
            pass

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        # Short blocking limits: the sender thread must notice an outage and keep draining.
        return KafkaProducer(bootstrap_timeout_ms=int(self.connect_timeout * 1000),
                             max_block_ms=5000, request_timeout_ms=10000, linger_ms=100,
                             retries=3, **self.producer_args)

    def _run(self) -> None:
        producer = None
        while True:
            item = self.queue.get()
            if item is _STOP:
                break
            while producer is None:
                try:
                    producer = self._producer()
                except Exception as exc:  # noqa: BLE001  (broker down: retry later)
                    logging.getLogger("kafka.gitserver").debug("kafka connect failed: %s", exc)
                    # Meanwhile emit() drops what does not fit in the queue.
                    if self._closing.wait(self.retry_seconds):
                        return
            try:
                producer.send(self.topic, item).add_errback(lambda _exc: self._drop(1))
                self.sent += 1
            except Exception:  # noqa: BLE001  (metadata timeout etc.: the record is lost)
                self._drop(1)
        if producer is not None:
            producer.flush(timeout=5)
            producer.close(timeout=5)

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_STOP)
        super().close()


def handler_from_env(formatter: logging.Formatter,
                     environ: Mapping[str, str] | None = None) -> KafkaHandler | None:
    """The Kafka handler when the environment asks for one, else None (nothing started)."""
    found = settings(environ)
    if found is None:
        return None
    handler = KafkaHandler(found)
    handler.setFormatter(formatter)
    return handler
