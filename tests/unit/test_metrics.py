"""Metrics: names, multiprocess merging, dead-process cleanup, ng-line parsing.

Counting runs in subprocesses because prometheus_client fixes its multiprocess mode at
import time, exactly as it does in the real daemons.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gitserver.observe import metrics
from gitserver.push import report

PY = sys.executable


def _run(code: str, data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    prelude = textwrap.dedent(f"""
        from pathlib import Path
        from gitserver import config
        from gitserver.observe import metrics
        from gitserver.push import report
        cfg = config.load(environ={{}}, data_dir=Path({str(data_dir)!r}))
        metrics.setup(cfg)
    """)
    out = subprocess.run([PY, "-c", prelude + textwrap.dedent(code)], env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    return out.stdout


def _value(text: str, prefix: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_counts_from_several_processes_are_merged(tmp_path: Path) -> None:
    count = """
        metrics.ssh_auth("failure", "unknown-key")
        metrics.git_session("git-upload-pack")
        metrics.bytes("sent", 1000)
        report.count_refusals(b"ng refs/heads/m non-fast-forward pushes are not allowed\\n")
        metrics.http_request("/api/v1/tenants/{tenant}", "GET", 404, 0.01)
        metrics.pipeline_finished("succeeded", 3.0)
    """
    _run(count, tmp_path)
    _run(count, tmp_path)
    assert (tmp_path / "metrics").is_dir()
    text = _run("import sys; sys.stdout.write(metrics.exposition()[0].decode())", tmp_path)
    assert _value(text, 'gitserver_ssh_auth_total{reason="unknown-key",result="failure"}') == 2
    assert _value(text, 'gitserver_git_sessions_total{service="git-upload-pack"}') == 2
    assert _value(text, 'gitserver_ssh_bytes_total{direction="sent"}') == 2000
    assert _value(text, 'gitserver_ref_updates_refused_total{rule="non_fast_forward"}') == 2
    series = 'gitserver_http_requests_total{method="GET",route="/api/v1/tenants/{tenant}",status="404"}'
    assert _value(text, series) == 2
    assert _value(text, 'gitserver_http_errors_total{class="4xx"') == 2
    assert _value(text, 'gitserver_pipeline_seconds_count{status="succeeded"}') == 2
    # This process's own resource use is exported too.
    assert "process_cpu_seconds_total" in text
    assert "python_gc_collections_total" in text


def test_dead_process_gauge_files_are_cleaned(tmp_path: Path) -> None:
    _run("metrics.git_child_started()", tmp_path)  # the process exits with one child "running"
    files = list((tmp_path / "metrics").glob("gauge_livesum_*.db"))
    assert files, "a live gauge file was written"
    text = _run("""
        import sys
        n = metrics.clean_dead(Path(metrics.os.environ['PROMETHEUS_MULTIPROC_DIR']))
        print(n)
        sys.stdout.write(metrics.exposition()[0].decode())
    """, tmp_path)
    assert text.splitlines()[0] == "1"
    assert not any(f.exists() for f in files)
    assert _value(text, "gitserver_git_children ") == 0


def test_queue_collector_reports_depth_and_age(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, created_at TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs (status, created_at) VALUES "
                          "('queued', datetime('now', '-120 seconds')), ('queued', datetime('now')),"
                          "('running', datetime('now', '-999 seconds'))"))
    families = {f.name: f.samples[0].value for f in metrics.QueueCollector(engine).collect()}
    assert families["gitserver_queue_depth"] == 2
    assert 110 <= families["gitserver_queue_oldest_age_seconds"] <= 200


def test_queue_collector_survives_a_missing_database(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'q.db'}")
    assert list(metrics.QueueCollector(engine).collect()) == []


@pytest.mark.parametrize("raw, rules", [
    (b"ok refs/heads/main\nng refs/heads/x non-fast-forward pushes are not allowed\n", ["non_fast_forward"]),
    # side-band: the report's pkt-lines inside a channel-1 packet
    (b"0045\x010014unpack ok\n002fng refs/heads/main deleting branches and tags is not allowed\n0000",
     ["delete"]),
    (b"ng refs/tags/v1 atomic push failed: another ref was refused\n", ["other"]),
    (b"remote: ng is not at line start\nok refs/heads/a\n", []),
])
def test_refusals_from_report(raw: bytes, rules: list[str]) -> None:
    assert report.refusals_from_report(raw) == rules


def test_graphite_is_off_without_both_variables() -> None:
    from gitserver.observe import graphite

    assert graphite.settings({}) is None
    assert graphite.settings({"GRAPHITE_SERVER": "g.example.org"}) is None
    assert graphite.start({"GRAPHITE_KEY": "x"}) is None
    assert graphite.settings({"GRAPHITE_SERVER": "g", "GRAPHITE_KEY": "gs.vm1"}) == ("g", 2003, "gs.vm1")
    assert graphite.settings({"GRAPHITE_SERVER": "g", "GRAPHITE_KEY": "k", "GRAPHITE_PORT": "2004"}) == ("g", 2004, "k")


def test_http_method_label_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone can send requests with made-up methods (FOOA, FOOB, …); each must not become a
    new label value kept forever by the metrics registry (and in every scrape)."""
    import types

    from gitserver.api.resources.metrics import MetricsMiddleware

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "http_request",
                        lambda route, method, status, seconds: seen.append((route, method)))
    middleware = MetricsMiddleware()
    for method in ("GET", "PATCH", "QWERTYUIOPASDFGHJKLZ", "BREW"):
        req = types.SimpleNamespace(method=method, uri_template=None,
                                    context=types.SimpleNamespace(metrics_start=time.monotonic()))
        middleware.process_response(req, types.SimpleNamespace(status_code=405), None, True)  # type: ignore[arg-type]
    assert seen == [("unmatched", "GET"), ("unmatched", "PATCH"), ("unmatched", "other"),
                    ("unmatched", "other")]
