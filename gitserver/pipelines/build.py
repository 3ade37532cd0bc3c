"""The build step: the steps of the pipeline file (:mod:`gitserver.pipelines.pipelinefile`),
run one by one.

Each step runs in a fresh ``git clone --depth 1 --branch repour-<id>`` of the repository in a
temporary directory, in a clean environment (PATH, HOME=<temp>, LANG and the ``GITSERVER_*``
coordinates), in its own session/process group (cancel and timeouts kill the whole group),
under RLIMIT_CPU/RLIMIT_AS/RLIMIT_FSIZE, and in a sandbox of its own (:mod:`gitserver.process.sandbox`,
docs/sandbox.md): a UID no other job has, a private /tmp, its own PID namespace, a read-only
system, no data dir, and the network only when the pipeline file asks for it and the server's
``build_network`` allows it. Where no sandbox can be had the step fails saying why, unless the
operator set ``build_allow_unisolated``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from gitserver.pipelines.jobs import JobContext
from gitserver.pipelines.pipelinefile import StepSpec
from gitserver.pipelines.workspaces import Sandbox, Workspace
from gitserver.process import children
from gitserver.process import sandbox as sandbox_mod
from gitserver.process.children import stop_group

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
ENV_COMMAND = shutil.which("env", path=DEFAULT_PATH) or "/usr/bin/env"
# Output is stored in chunks of about this size, and at least once a second.
LOG_CHUNK = 4096
LOG_FLUSH_SECONDS = 1.0
# How often a running step looks at cancel, release and its deadline.
POLL_SECONDS = 0.2
# Seconds of CPU between SIGXCPU (soft limit) and SIGKILL (hard limit).
CPU_KILL_GRACE = 5
# Between SIGTERM and SIGKILL of a step's process group.
KILL_GRACE = 1.0



@dataclasses.dataclass(frozen=True)
class Coordinates:
    """What a build step is told about what it builds (the GITSERVER_* variables)."""

    repo: str  # tenant/name
    ref: str
    commit: str  # the pushed commit
    tag: str  # repour-<archive commit>
    readonly_url: str
    # More GITSERVER_* variables of pipelines that build no push (a ``create`` pipeline).
    extra: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        return {"GITSERVER_REPO": self.repo, "GITSERVER_REF": self.ref,
                "GITSERVER_COMMIT": self.commit, "GITSERVER_TAG": self.tag,
                "GITSERVER_READONLY_URL": self.readonly_url, **dict(self.extra)}


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    status: str  # succeeded | failed | cancelled | released
    exit_code: int | None
    message: str


# --- running a step --------------------------------------------------------------------------

def step_environment(spec: StepSpec, coords: Coordinates, home: Path,
                     variables: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """A step's clean environment: the pipeline file's ``env``, then the push's
    ``ci.variable`` options (the pusher's choice for this push wins), then the coordinates."""
    env = {"PATH": DEFAULT_PATH, "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(home)}
    env.update(dict(spec.env))
    env.update(dict(variables))
    env.update(coords.environment())  # the coordinates always win
    return env


def _limits(sandbox: Sandbox, job: sandbox_mod.Job) -> Any:
    cpu, memory, fsize = sandbox.cpu_seconds, sandbox.memory_bytes, sandbox.file_size_bytes
    job_limits = job.limits_hook()
    # Resolved here, in the worker: the child may have become the build user already and may
    # not be able to read the Python installation to import anything.
    # SIGKILL the step's first process if the worker dies (see gitserver.process.children); bwrap passes
    # that on (--die-with-parent). Applied after a user switch (a credential change clears it),
    # which subprocess does before preexec_fn.
    die_with_worker = children.die_with_parent_hook()

    def apply() -> None:  # runs in the child between fork and exec
        # SIGXCPU at the soft limit says why the step died; SIGKILL a little later if it
        # catches or ignores that.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + CPU_KILL_GRACE))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        job_limits()
        die_with_worker()

    return apply


def run_step(ctx: JobContext, spec: StepSpec, workspace: Workspace, coords: Coordinates,
             sandbox: Sandbox, variables: tuple[tuple[str, str], ...] = ()) -> StepOutcome:
    """Run one step in ``workspace``'s sandbox, streaming its output to the pipeline log;
    kills it on cancel, release (worker shutdown) or timeout."""
    if spec.network == "host" and sandbox.network == "none":
        message = ('the pipeline file asks for network = "host" but this server\'s build_network '
                   'is "none": the step was not run')
        ctx.log(f"*** {message}\n")
        return StepOutcome("failed", None, message)
    job = workspace.job
    timeout = min(spec.timeout or sandbox.max_timeout, sandbox.max_timeout)
    env = step_environment(spec, coords, workspace.root / "home", variables)
    kwargs: dict[str, Any] = {}
    cwd = workspace.root / "src"
    if job.sandboxed:
        # bwrap and setpriv start as root: they must not see the step's environment, which
        # the pusher writes (env = {…} in the pipeline file, ci.variable push options):
        # LD_PRELOAD=src/x.so from the pushed tree would run its code as root on the host.
        # env(1) sets it inside the sandbox, after setpriv has switched to the job's UID.
        inner = [ENV_COMMAND, "-i", *(f"{k}={v}" for k, v in env.items()), *spec.argv]
        env = {"PATH": DEFAULT_PATH, "LANG": "C"}
        argv = job.command(inner, cwd=cwd, network=spec.network)
        ctx.log(f"{job.describe(spec.network)}\n")
    else:
        argv = job.command(spec.argv, cwd=cwd, network=spec.network)
        if sandbox.fallback_uid is not None:
            kwargs.update(user=sandbox.fallback_uid, group=sandbox.fallback_gid, extra_groups=[])
    try:
        child = subprocess.Popen(argv, cwd=workspace.root if job.sandboxed else cwd, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_limits(sandbox, job), **kwargs)  # noqa: PLW1509
    except OSError as exc:
        ctx.log(f"cannot start {argv[0]}: {exc.strerror}\n")
        return StepOutcome("failed", None, f"cannot start {argv[0]}: {exc.strerror}")
    except subprocess.SubprocessError as exc:  # the child's set-up (preexec_fn) failed
        log.error("setting up build step %r failed: %s", spec.name, exc)
        message = "cannot set up the step's limits; see the worker's log"
        ctx.log(f"*** {message}\n")
        return StepOutcome("failed", None, message)
    return _supervise(ctx, child, timeout)


def _supervise(ctx: JobContext, proc: subprocess.Popen[bytes], timeout: float) -> StepOutcome:
    """Pump output to the log until the step's first process exits, watching cancel,
    release and the deadline; then kill whatever it left behind in its group."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    reason = None
    out = _LogBuffer(ctx)
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        eof = False
        while True:
            ready = _read_some(sel, fd, out) if not eof else []
            if ready is None:
                eof = True
            if ready:
                out.maybe_flush()
            else:
                out.flush()  # the step is quiet: whatever it said is stored now
                if eof:
                    time.sleep(POLL_SECONDS)  # stdout closed, the process may still run
            if _exited(proc) and (eof or not sel.select(0)):
                break
            if reason is None:
                reason = _stop_reason(ctx, deadline, timeout)
                if reason is not None:
                    _kill_group(proc)
                    # Bound the wait for a process that does not die (stuck in the kernel).
                    deadline = time.monotonic() + 2 * KILL_GRACE
            elif time.monotonic() > deadline:
                break
        # The first process has exited but is not reaped yet, so its pid still names the
        # group: nothing else can have taken it. Leftovers (background jobs) die now.
        _kill_group(proc, grace=0)
        while not eof and _read_some(sel, fd, out, wait=0.5):
            pass  # what the killed leftovers wrote before the pipe closed
    out.flush()
    proc.stdout.close()
    code = proc.wait()
    return _outcome(ctx, reason, code, timeout)


def _read_some(sel: selectors.BaseSelector, fd: int, out: _LogBuffer,
               wait: float = POLL_SECONDS) -> list[Any] | None:
    """Read what is ready into ``out``: the ready events ([] when none), None at EOF."""
    ready = sel.select(wait)
    for _key, _mask in ready:
        data = os.read(fd, 65536)
        if not data:
            return None
        out.add(data)
    return ready


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stop_reason(ctx: JobContext, deadline: float, timeout: float) -> str | None:
    if ctx.cancelled():
        return "cancelled"
    if ctx.released():
        return "released"
    if time.monotonic() > deadline:
        return "timeout"
    return None


def _outcome(ctx: JobContext, reason: str | None, code: int, timeout: float) -> StepOutcome:
    if reason == "cancelled":
        ctx.log("\n*** cancelled: the step's processes were killed\n")
        return StepOutcome("cancelled", code, "cancelled")
    if reason == "released":
        ctx.log("\n*** the worker is shutting down: step stopped, the pipeline will be re-run\n")
        return StepOutcome("released", code, "worker shut down")
    if reason == "timeout":
        message = f"timed out after {timeout:g} seconds"
        ctx.log(f"\n*** {message}\n")
        return StepOutcome("failed", code, message)
    if code == 0:
        return StepOutcome("succeeded", 0, "")
    if code < 0:
        message = f"killed by {_signal_name(-code)}"
    else:
        message = f"exited with status {code}"
        if 128 < code < 128 + 65:  # a shell reporting a child killed by signal code-128
            message += f" (a process was killed by {_signal_name(code - 128)})"
    ctx.log(f"\n*** {message}\n")
    return StepOutcome("failed", code, message)


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return name + _LIMIT_SIGNALS.get(number, "")


# The signals the kernel sends when a resource limit is hit.
_LIMIT_SIGNALS = {int(signal.SIGXCPU): " (CPU time limit)", int(signal.SIGXFSZ): " (file size limit)"}


def _kill_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE) -> None:
    """SIGTERM, then SIGKILL after ``grace``, to the step's whole process group (start_new_session:
    the step leads its own); the SIGKILL goes out even when the step itself exited, for what
    it left running."""

    def wait(timeout: float | None) -> bool:
        end = time.monotonic() + (timeout or 0.0)
        while time.monotonic() < end and not _exited(proc):  # (never reap: see _supervise)
            time.sleep(0.05)
        return _exited(proc)

    stop_group(proc.pid, wait, grace, kill_wait=0.0, sweep=True)


class _LogBuffer:
    """Collects output and writes it to the pipeline log in ~4 KiB pieces, at least every
    second, so a follower sees it as it comes without one row per byte."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.buf = bytearray()
        self.last = time.monotonic()

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= LOG_CHUNK:
            self.flush()

    def maybe_flush(self) -> None:
        if self.buf and time.monotonic() - self.last >= LOG_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.ctx.log(bytes(self.buf))
            self.buf.clear()
        self.last = time.monotonic()
