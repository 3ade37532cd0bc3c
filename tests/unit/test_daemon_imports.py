"""What the SSH daemon loads: nothing it never uses.

The daemon records pushes and queues their webhooks (pipelines.ledger → pipelines.outbox) but
never sends one; sending (requests, urllib3, gitserver.net.netguard) is the worker's
(pipelines.deliver). It serves no HTTP either (falcon is the API's), and checks no JWT (PyJWT
is imported only when an OIDC issuer is configured). Each of these costs megabytes of RSS in
every daemon process (see docs/performance.md), so a new import that pulls one back in fails
here. A fresh interpreter, because this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What `gitserver ssh` imports before it serves: the daemon, its logging and metrics, and the
# configuration as loaded from an empty environment.
PROGRAM = """
import json, sys
import gitserver.ssh.server, gitserver.observe.logs, gitserver.observe.metrics, gitserver.cli
from gitserver import config
config.load(environ={})
print(json.dumps(sorted(sys.modules)))
"""

NOT_IN_THE_DAEMON = ("requests", "urllib3", "falcon", "gunicorn", "jwt", "gitserver.net.netguard",
                     "gitserver.pipelines.deliver", "gitserver.api", "gitserver.identity.oidc")


@pytest.fixture(scope="module")
def daemon_modules() -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    assert "gitserver.pipelines.outbox" in modules  # the daemon does queue webhooks
    return modules


@pytest.mark.parametrize("module", NOT_IN_THE_DAEMON)
def test_the_ssh_daemon_does_not_import(daemon_modules: set[str], module: str) -> None:
    assert module not in daemon_modules


def test_the_worker_still_has_the_sender() -> None:
    # The other side of the split: the handler map wires the delivery module.
    from gitserver.cmd import wiring
    from gitserver.pipelines import deliver

    handlers = wiring.job_handlers()
    assert handlers["webhook"] is deliver.run_delivery_job
    assert handlers["callback"].func is deliver.run_delivery_job  # type: ignore[attr-defined]
