# gunicorn settings for the gitserver REST API, for operators who run gunicorn themselves:
#
#   GITSERVER_CONFIG=/etc/gitserver/gitserver.toml \
#   gunicorn -c /etc/gitserver/gunicorn.conf.py 'gitserver.cmd.wiring:get_app()'
#
# `gitserver api` (and `gitserver serve`) apply the same settings programmatically: both take
# them from gitserver.api.serving.settings. This file exists so that a deployment that wants
# gunicorn's own command line (a process manager that expects it, extra gunicorn options) runs
# the API exactly as gitserver does.
import os

from gitserver import config as _config
from gitserver.api import serving as _serving
from gitserver.observe import metrics as _metrics

_cfg = _config.load()

# bind, workers, worker_class, threads, timeouts, proc_name, accesslog, control_socket_disable:
# the settings `gitserver api` runs with (gitserver/api/serving.py), from the gitserver
# configuration (GITSERVER_HTTP_HOST / _PORT / _WORKERS / _HEADER_TIMEOUT …).
globals().update(_serving.settings(_cfg))


def on_starting(server):  # gunicorn hook signature
    # Every process (API workers, SSH daemon, pipeline workers) writes its metrics into one
    # multiprocess directory that /metrics merges; set it before any worker imports the client.
    _metrics.setup(_cfg, clean=True)
    os.environ.setdefault(_metrics.ENV_MULTIPROC, str(_metrics.metrics_dir(_cfg)))


def child_exit(server, worker):  # gunicorn hook signature
    # A dead worker's live gauges must not be summed into /metrics any more.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
