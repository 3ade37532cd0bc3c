"""Optional Graphite export: only when ``GRAPHITE_SERVER`` and ``GRAPHITE_KEY`` are set.

These are deployment variables (not Config fields); they are read here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def settings(environ: Mapping[str, str] | None = None) -> tuple[str, int, str] | None:
    """``(server, port, prefix)`` from the environment, or None when export is off (pure)."""
    env = os.environ if environ is None else environ
    server, key = env.get("GRAPHITE_SERVER", ""), env.get("GRAPHITE_KEY", "")
    if not server or not key:
        return None
    return server, int(env.get("GRAPHITE_PORT") or 2003), key


def start(environ: Mapping[str, str] | None = None, interval: float = 60.0,
          registry: Any = None) -> Any:
    """Start pushing every ``interval`` seconds in a daemon thread; returns the bridge or None."""
    found = settings(environ)
    if found is None:
        return None
    server, port, prefix = found
    from prometheus_client import CollectorRegistry, multiprocess
    from prometheus_client.bridge.graphite import GraphiteBridge

    if registry is None:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)
    bridge = GraphiteBridge((server, port), registry=registry)
    bridge.start(interval, prefix=prefix)
    log.info("graphite export to %s:%d every %ss, prefix %s", server, port, interval, prefix)
    return bridge
