# gunicorn settings for the gitserver REST API, for operators who run gunicorn themselves:
#
#   GITSERVER_CONFIG=/etc/gitserver/gitserver.toml \
#   gunicorn -c /etc/gitserver/gunicorn.conf.py 'gitserver.cmd.wiring:get_app()'
#
# `gitserver api` (and `gitserver serve`) apply the same settings programmatically; this file
# exists so that a deployment that wants gunicorn's own command line (a process manager that
# expects it, extra gunicorn options) runs the API exactly as gitserver does.
import os

from gitserver import config as _config
from gitserver import metrics as _metrics
from gitserver.api import worker as _worker

_cfg = _config.load()

# Listen where the gitserver configuration says (GITSERVER_HTTP_HOST / _PORT).
bind = (f"[{_cfg.http_host}]:{_cfg.http_port}" if ":" in _cfg.http_host
        else f"{_cfg.http_host}:{_cfg.http_port}")
workers = _cfg.http_workers
# Threads, not async workers: handlers block on SQL and on git (smart HTTP streams a pack
# from a git child), and threads keep that simple while one process serves many clients.
# gunicorn's gthread with one change: the request head is read by the worker's event loop
# (at most GITSERVER_HTTP_HEADER_TIMEOUT seconds), so slow clients hold no thread; see
# gitserver/api/worker.py and docs/limits.md.
worker_class = _worker.worker_class(_cfg.http_header_timeout, _cfg.http_read_timeout)
threads = 8
# A clone over smart HTTP can stream for minutes; the timeout only catches hung workers.
timeout = 120
graceful_timeout = 30
proc_name = "gitserver-api"
# Access logs come from gitserver's own request logging (JSON or text, with request ids).
accesslog = None
# gunicorn >= 25.1 opens a control socket at one path per user; replicas on one host would take
# it from each other. gitserver does not use it (older gunicorn ignores the name).
control_socket_disable = True


def on_starting(server):  # gunicorn hook signature
    # Every process (API workers, SSH daemon, pipeline workers) writes its metrics into one
    # multiprocess directory that /metrics merges; set it before any worker imports the client.
    _metrics.setup(_cfg, clean=True)
    os.environ.setdefault(_metrics.ENV_MULTIPROC, str(_metrics.metrics_dir(_cfg)))


def child_exit(server, worker):  # gunicorn hook signature
    # A dead worker's live gauges must not be summed into /metrics any more.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
