"""Prometheus metrics: every metric object of gitserver, and small functions to count with.

Call :func:`setup` at process start, before anything else imports ``prometheus_client``:
it sets ``PROMETHEUS_MULTIPROC_DIR`` (``<data_dir>/metrics``) so the API workers, the SSH
daemon and the pipeline workers all write to one directory that ``/metrics`` merges.

Refused ref updates are counted by the SSH session from the ``ng <ref> <message>`` lines
receive-pack sends back to the client (gitserver.push.report.count_refusals): the proc-receive hook stays
free of prometheus_client, it is a short-lived process on the push's latency path. The
message is mapped back to its rule (``non_fast_forward``, ``delete``, ...).
"""

from __future__ import annotations

import builtins
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gitserver.config import Config
from gitserver.process.children import pid_alive

log = logging.getLogger(__name__)

ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_m: dict[str, Any] = {}


def metrics_dir(config: Config) -> Path:
    """Where the per-process metric files live."""
    return config.data_dir / "metrics"


def setup(config: Config, clean: bool = False) -> Path:
    """Point prometheus_client at the shared multiprocess directory and define the metrics.

    ``clean`` (``serve`` and the first process of a host) removes files of dead processes.
    """
    directory = Path(os.environ.get(ENV_MULTIPROC) or metrics_dir(config))
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_MULTIPROC] = str(directory)
    if clean:
        clean_dead(directory)
    reserve_file_space()
    _safe(_define)()
    return directory


def reserve_file_space() -> None:
    """Make a full disk an error instead of a crash.

    prometheus_client grows its mmapped files with truncate(), which makes them sparse: the
    first write to a page that has no disk block behind it, on a full disk, kills the process
    with SIGBUS (every API worker died that way). Here the blocks are reserved
    (posix_fallocate) before the file is mapped or grown, so a full disk raises ENOSPC, which
    the counting functions below swallow: a metric goes uncounted, the request is served.
    """
    from prometheus_client import mmap_dict, values

    if getattr(values.MmapedDict, "space_reserved", False):  # type: ignore[attr-defined]
        return

    class ReservedMmapedDict(mmap_dict.MmapedDict):
        space_reserved = True

        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                _reserve(filename, _INITIAL_METRICS_FILE)
            super().__init__(filename, read_mode)

        def _init_value(self, key: str) -> None:
            # An entry takes at most the key + 28 bytes (length, padding, value, timestamp).
            capacity = self._capacity
            while self._used + len(key.encode("utf-8")) + 32 > capacity:
                capacity *= 2
            if capacity != self._capacity:
                os.posix_fallocate(self._f.fileno(), 0, capacity)
            super()._init_value(key)

    values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]


# The size prometheus_client gives a new metrics file (mmap_dict._INITIAL_MMAP_SIZE); it takes
# an existing file's size as is, so reserving this much up front changes nothing else.
_INITIAL_METRICS_FILE = 1 << 16


def _reserve(filename: str, initial: int) -> None:
    """Reserve the disk blocks of a metrics file; a new one that cannot get them is removed
    (an empty file would break the merge in /metrics)."""
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, 0, size or initial)
        except OSError:
            if size == 0:
                os.unlink(filename)
            raise
    finally:
        os.close(fd)


_F = TypeVar("_F", bound=Callable[..., None])
_warned_full = False


def _safe(fn: _F) -> _F:
    """Counting must never fail what is being counted: an OSError from the metrics files
    (a full disk) is logged once per process and the metric is skipped."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        global _warned_full
        try:
            fn(*args, **kwargs)
        except OSError as exc:
            if not _warned_full:
                _warned_full = True
                log.warning("metrics not recorded: %s (is the disk of %s full?)", exc,
                            os.environ.get(ENV_MULTIPROC, "the metrics directory"))
    return wrapper  # type: ignore[return-value]


def clean_dead(directory: Path) -> int:
    """Drop the live-gauge files of processes that no longer exist; returns how many pids."""
    from prometheus_client import multiprocess

    dead = set()
    for path in directory.glob("*_*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return len(dead)


def _define() -> None:
    """Create the metric objects once per process (after the env var is set)."""
    if _m:
        return
    import prometheus_client

    # Created unregistered, then registered all at once: a definition that fails half-way
    # (a full disk under the metrics files) registers nothing and can simply be retried.
    Counter = functools.partial(prometheus_client.Counter, registry=None)  # noqa: N806
    Gauge = functools.partial(prometheus_client.Gauge, registry=None)  # noqa: N806
    Histogram = functools.partial(prometheus_client.Histogram, registry=None)  # noqa: N806

    created = dict(
        http_seconds=Histogram("gitserver_http_request_seconds", "HTTP request latency",
                               ["route", "method"]),
        http_total=Counter("gitserver_http_requests_total", "HTTP requests",
                           ["route", "method", "status"]),
        http_errors=Counter("gitserver_http_errors_total", "HTTP 4xx/5xx responses",
                            ["route", "class"]),
        json_invalid=Counter("gitserver_json_validation_errors_total",
                             "Request bodies rejected by validation", ["route"]),
        callback_failures=Counter("gitserver_callback_failures_total",
                                  "Webhook/callback deliveries that failed", ["reason"]),
        deliveries=Counter("gitserver_deliveries_total",
                           "Webhook and callback delivery attempts by event and outcome "
                           "(delivered, retry, failed)", ["event", "outcome"]),
        delivery_seconds=Histogram("gitserver_delivery_seconds",
                                   "Duration of webhook and callback requests", ["event"],
                                   buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))),
        ssh_connections=Counter("gitserver_ssh_connections_total", "SSH connections accepted"),
        ssh_auth=Counter("gitserver_ssh_auth_total", "SSH authentication attempts",
                         ["result", "reason"]),
        git_sessions=Counter("gitserver_git_sessions_total", "Git sessions by service",
                             ["service"]),
        bytes=Counter("gitserver_ssh_bytes_total", "Bytes through git sessions", ["direction"]),
        http_git_sessions=Counter("gitserver_http_git_sessions_total",
                                  "Smart HTTP git requests by service and kind "
                                  "(advertise, rpc, refused)", ["service", "kind"]),
        http_git_bytes=Counter("gitserver_http_git_bytes_total",
                               "Bytes through smart HTTP git requests", ["direction"]),
        git_children=Gauge("gitserver_git_children", "Running git child processes",
                           multiprocess_mode="livesum"),
        pushes=Counter("gitserver_pushes_total", "Pushes received", ["result"]),
        refs_refused=Counter("gitserver_ref_updates_refused_total", "Refused ref updates",
                             ["rule"]),
        pushes_over_limit=Counter("gitserver_pushes_over_limit_total",
                                  "Pushes refused for a size limit or quota (max_blob_bytes, "
                                  "max_push_bytes, repo_quota_bytes, tenant_quota_bytes)", ["limit"]),
        pipeline_seconds=Histogram("gitserver_pipeline_seconds", "Pipeline durations",
                                   ["status"], buckets=(1, 5, 15, 60, 300, 900, 3600, float("inf"))),
        step_seconds=Histogram("gitserver_pipeline_step_seconds", "Pipeline step durations",
                               ["status"], buckets=(1, 5, 15, 60, 300, 900, 3600, float("inf"))),
        archives=Counter("gitserver_archives_total",
                         "Archive requests: a new tag (created) or the tree's existing one (existing)",
                         ["result"]),
        job_seconds=Histogram("gitserver_job_seconds", "Queue job run time by kind and outcome",
                              ["kind", "status"],
                              buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf"))),
        repour_seconds=Histogram("gitserver_repour_operation_seconds",
                                 "Repour-compatible clone/adjust/internal-scm runs by outcome "
                                 "(HTTP status of the result: 200, 400, 500; cancelled)",
                                 ["operation", "status"],
                                 buckets=(0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf"))),
        bundle_downloads=Counter("gitserver_bundle_downloads_total",
                                 "Bundles served from /bundles/ (git clone --bundle-uri)"),
        log_dropped=Counter("gitserver_log_records_dropped_total",
                            "Log records dropped by a shipping handler", ["sink"]),
    )
    for metric in created.values():
        prometheus_client.REGISTRY.register(metric)
    _m.update(created)


def _get(name: str) -> Any:
    if not _m:
        _define()
    return _m[name]


class _Count:
    """The counting function of one counter: adds one for the label values it is called with,
    in the order of the counter's label names (none for a counter without labels)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    @_safe
    def __call__(self, *labels: str) -> None:
        counter = _get(self.metric)
        (counter.labels(*labels) if labels else counter).inc()


json_invalid = _Count("json_invalid")  # (route)
callback_failed = _Count("callback_failures")  # (reason)
ssh_connection = _Count("ssh_connections")
# (result, reason): success or failure, and e.g. publickey, unknown-key.
ssh_auth = _Count("ssh_auth")
git_session = _Count("git_sessions")  # (service)
# (service, kind): one smart HTTP git request; kind is advertise (info/refs), rpc (a POST) or
# refused (a push attempt).
http_git_session = _Count("http_git_sessions")
push = _Count("pushes")  # (result)
ref_refused = _Count("refs_refused")  # (rule)
push_over_limit = _Count("pushes_over_limit")  # (limit): the name of a gitserver.push.limits limit
bundle_download = _Count("bundle_downloads")


@_safe
def http_request(route: str, method: str, status: int, seconds: float) -> None:
    """One HTTP response; ``route`` is the route template, never the raw path."""
    _get("http_seconds").labels(route, method).observe(seconds)
    _get("http_total").labels(route, method, str(status)).inc()
    if status >= 400:
        _get("http_errors").labels(route, f"{status // 100}xx").inc()


@_safe
def delivery_attempt(event: str, outcome: str, seconds: float) -> None:
    """One webhook/callback attempt; ``event`` is push, pipeline or callback."""
    _get("deliveries").labels(event, outcome).inc()
    _get("delivery_seconds").labels(event).observe(seconds)


# Shadows the builtin inside this module (hence builtins.bytes in annotations here); callers
# write metrics.bytes(...).
@_safe
def bytes(direction: str, n: int) -> None:  # noqa: A001  (the name the callers use)
    """``direction`` is ``sent`` or ``received``."""
    if n:
        _get("bytes").labels(direction).inc(n)


@_safe
def http_git_bytes(direction: str, n: int) -> None:
    """Bytes of smart HTTP git traffic; ``direction`` is ``sent`` or ``received``."""
    if n:
        _get("http_git_bytes").labels(direction).inc(n)


@_safe
def git_child_started() -> None:
    _get("git_children").inc()


@_safe
def git_child_finished() -> None:
    _get("git_children").dec()


@_safe
def pipeline_finished(status: str, seconds: float) -> None:
    _get("pipeline_seconds").labels(status).observe(seconds)


@_safe
def step_finished(status: str, seconds: float) -> None:
    _get("step_seconds").labels(status).observe(seconds)


@_safe
def archive(created: bool) -> None:
    _get("archives").labels("created" if created else "existing").inc()


@_safe
def job_finished(kind: str, status: str, seconds: float) -> None:
    """One job run by a worker: ``status`` is its new state (``succeeded``, ``failed``,
    ``cancelled``, ``queued`` for a retry or release, ``lost`` when another worker took over)."""
    _get("job_seconds").labels(kind, status).observe(seconds)


@_safe
def repour_operation(operation: str, status: str, seconds: float) -> None:
    """One Repour-compatible operation finished (inline or as a job); ``status`` is the result's
    HTTP status or ``cancelled``."""
    _get("repour_seconds").labels(operation, status).observe(seconds)


@_safe
def log_dropped(sink: str, n: int = 1) -> None:
    _get("log_dropped").labels(sink).inc(n)


class QueueCollector:
    """Queue depth and age of the oldest queued job, read from SQL at scrape time."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Any:
        import datetime as dt

        from prometheus_client.core import GaugeMetricFamily
        from sqlalchemy import text

        depth = GaugeMetricFamily("gitserver_queue_depth", "Queued jobs")
        age = GaugeMetricFamily("gitserver_queue_oldest_age_seconds",
                                "Age of the oldest queued job")
        try:
            with self.engine.connect() as conn:
                count, oldest = conn.execute(text(
                    "SELECT count(*), min(created_at) FROM jobs WHERE status = 'queued'")).one()
        except Exception:  # a scrape must not fail on a database hiccup
            log.warning("queue metrics: database query failed", exc_info=True)
            return
        depth.add_metric([], float(count))
        seconds = 0.0
        if oldest is not None:
            if isinstance(oldest, str):
                oldest = dt.datetime.fromisoformat(oldest)
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=dt.UTC)
            seconds = max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds())
        age.add_metric([], seconds)
        yield depth
        yield age


class PackCacheCollector:
    """The pack cache's counters and size, read from its directory at scrape time (every
    fetch's hook process counts there: gitserver.git.packcache)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from gitserver.git import packcache

        hits = CounterMetricFamily("gitserver_pack_cache_hits", "Fetches answered from the pack cache "
                                   "(a cached pack, or one being written for an identical fetch)")
        hits.add_metric([], packcache.counter(self.cache_dir, packcache.HITS))
        misses = CounterMetricFamily("gitserver_pack_cache_misses", "Fetches that ran pack-objects")
        misses.add_metric([], packcache.counter(self.cache_dir, packcache.MISSES))
        size = GaugeMetricFamily("gitserver_pack_cache_bytes", "Bytes of the packs the cache holds")
        size.add_metric([], packcache.stored_bytes(self.cache_dir))
        yield from (hits, misses, size)


def exposition(engine: Any = None, pack_cache_dir: Path | None = None) -> tuple[builtins.bytes, str]:
    """The text of ``/metrics``: every process's metrics, this process's CPU/memory/GC, the
    queue collector and the pack cache's."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        gc_collector,
        generate_latest,
        multiprocess,
        platform_collector,
        process_collector,
    )

    registry = CollectorRegistry()
    if os.environ.get(ENV_MULTIPROC):
        multiprocess.MultiProcessCollector(registry)
    process_collector.ProcessCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    if engine is not None:
        registry.register(QueueCollector(engine))
    if pack_cache_dir is not None:
        registry.register(PackCacheCollector(pack_cache_dir))
    return generate_latest(registry), CONTENT_TYPE_LATEST
