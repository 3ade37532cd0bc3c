"""The build step: ``.gitserver/pipeline.toml`` of the archived tree, run step by step.

The file (documented in the README, "Pipelines")::

    build_tags = true               # optional: also build pushed tags (default: branches only)
    network = "host"                # optional: the steps' network, "none" (default) or "host"

    [[steps]]
    name = "test"                   # unique; letters, digits, ".", "_", "-", " "
    command = "make test"           # a string runs with /bin/sh -c; a list runs as is
    timeout = 600                   # optional, seconds (capped at the server's build_timeout)
    env = { MODE = "ci" }           # optional, added to the clean environment
    network = "none"                # optional, this step's network (default: the file's)

Each step runs in a fresh ``git clone --depth 1 --branch repour-<id>`` of the repository in a
temporary directory, in a clean environment (PATH, HOME=<temp>, LANG and the ``GITSERVER_*``
coordinates), in its own session/process group (cancel and timeouts kill the whole group),
under RLIMIT_CPU/RLIMIT_AS/RLIMIT_FSIZE, and in a sandbox of its own (:mod:`gitserver.sandbox`,
docs/sandbox.md): a UID no other job has, a private /tmp, its own PID namespace, a read-only
system, no data dir, and the network only when the pipeline file asks for it and the server's
``build_network`` allows it. Where no sandbox can be had the step fails saying why, unless the
operator set ``build_allow_unisolated``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pwd
import re
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from gitserver import proc
from gitserver import sandbox as sandbox_mod
from gitserver.config import Config
from gitserver.git.store import git_env
from gitserver.pipelines.jobs import JobContext
from gitserver.proc import pid_alive, stop_group

log = logging.getLogger(__name__)

PIPELINE_FILE = ".gitserver/pipeline.toml"
MAX_PIPELINE_FILE = 64 * 1024
MAX_STEPS = 50
STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
STEP_KEYS = {"name", "command", "timeout", "env", "network"}
TOP_LEVEL_KEYS = {"steps", "build_tags", "network"}
# A step's network when its pipeline file names none.
DEFAULT_STEP_NETWORK = "none"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
ENV_COMMAND = shutil.which("env", path=DEFAULT_PATH) or "/usr/bin/env"
# Output is stored in chunks of about this size, and at least once a second.
LOG_CHUNK = 4096
LOG_FLUSH_SECONDS = 1.0
# How often a running step looks at cancel, release and its deadline.
POLL_SECONDS = 0.2
# Seconds of CPU between SIGXCPU (soft limit) and SIGKILL (hard limit).
CPU_KILL_GRACE = 5
# Workspaces are <tmp>/gitserver-build-<worker pid>-<random>.
WORKSPACE_PREFIX = "gitserver-build-"
# Between SIGTERM and SIGKILL of a step's process group.
KILL_GRACE = 1.0


class PipelineFileError(Exception):
    """The pipeline file is malformed; the message names the file and the line."""


class SandboxError(Exception):
    """A build cannot be set up on this worker (its message says why)."""


@dataclasses.dataclass(frozen=True)
class StepSpec:
    name: str
    argv: tuple[str, ...]
    timeout: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    line: int = 0
    network: str = DEFAULT_STEP_NETWORK


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """A parsed pipeline file."""

    steps: list[StepSpec]
    # Whether a pushed tag whose tree holds this file is built (branches always are).
    build_tags: bool = False


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


# --- the pipeline file (pure) ----------------------------------------------------------------

def parse_pipeline(text: str) -> PipelineSpec:
    """Validate ``text`` as a pipeline file; every error names the line it is about."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"line {match.group(1)}, column {match.group(2)}" if match else "line ?"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise PipelineFileError(f"{PIPELINE_FILE}: {where}: {reason}") from exc
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise _error(text, f"unknown top-level key {unknown[0]!r} (allowed: [[steps]], build_tags, "
                           "network)", _key_line(text, unknown[0], 1))
    build_tags = data.get("build_tags", False)
    if not isinstance(build_tags, bool):
        raise _error(text, "'build_tags' must be true or false", _key_line(text, "build_tags", 1))
    network = data.get("network", DEFAULT_STEP_NETWORK)
    if network not in sandbox_mod.NETWORKS:
        raise _error(text, _NETWORK_ERROR, _key_line(text, "network", 1))
    steps = data.get("steps")
    if steps is None:
        raise _error(text, "no [[steps]] defined", 1)
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise _error(text, "'steps' must be an array of tables, written [[steps]]",
                     _key_line(text, "steps", 1))
    if not steps:
        raise _error(text, "no [[steps]] defined", 1)
    if len(steps) > MAX_STEPS:
        raise _error(text, f"{len(steps)} steps; at most {MAX_STEPS} are allowed", 1)
    headers = _step_header_lines(text)
    specs: list[StepSpec] = []
    for index, raw in enumerate(steps):
        header = headers[index] if index < len(headers) else 1
        specs.append(_parse_step(text, raw, index + 1, header, network))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise _error(text, f"step name {spec.name!r} is used twice", spec.line)
        seen.add(spec.name)
    return PipelineSpec(steps=specs, build_tags=build_tags)


_NETWORK_ERROR = "'network' must be \"none\" (no network, the default) or \"host\""


def _parse_step(text: str, raw: dict[str, Any], number: int, header: int, network: str) -> StepSpec:
    def fail(key: str | None, message: str) -> PipelineFileError:
        line = _key_line(text, key, header) if key else header
        return _error(text, f"step {number}: {message}", line)

    unknown = sorted(set(raw) - STEP_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(STEP_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not STEP_NAME_RE.fullmatch(name):
        raise fail("name" if "name" in raw else None,
                   "'name' is required: 1-100 letters, digits, '.', '_', '-' or spaces")
    command = raw.get("command")
    if isinstance(command, str) and command.strip():
        argv: tuple[str, ...] = ("/bin/sh", "-c", command)
    elif isinstance(command, list) and command and all(isinstance(a, str) and a for a in command):
        argv = tuple(command)
    else:
        raise fail("command" if "command" in raw else None,
                   "'command' is required: a non-empty string or list of strings")
    if any("\0" in a for a in argv):
        raise fail("command", "'command' contains a NUL character")
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise fail("timeout", "'timeout' must be a positive number of seconds")
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise fail("env", "'env' must be a table of strings, like env = { KEY = \"value\" }")
    for key, value in env.items():
        if not ENV_NAME_RE.fullmatch(key) or key.startswith("GITSERVER_"):
            raise fail("env", f"env name {key!r} is not allowed (letters, digits, '_'; "
                              "GITSERVER_* is reserved)")
        if not isinstance(value, str) or "\0" in value:
            raise fail("env", f"env {key} must be a string")
    network = raw.get("network", network)
    if network not in sandbox_mod.NETWORKS:
        raise fail("network", _NETWORK_ERROR)
    return StepSpec(name=name, argv=argv, timeout=float(timeout) if timeout is not None else None,
                    env=tuple(sorted(env.items())), line=header, network=network)


def _error(_text: str, message: str, line: int) -> PipelineFileError:
    return PipelineFileError(f"{PIPELINE_FILE}: line {line}: {message}")


def _step_header_lines(text: str) -> list[int]:
    pattern = re.compile(r"^\s*\[\[\s*(?:\"steps\"|'steps'|steps)\s*\]\]")
    return [n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)]


def _key_line(text: str, key: str, start: int) -> int:
    """The first line at or after ``start`` that assigns ``key`` (best effort, for messages)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    lines = text.splitlines()
    for n in range(start, len(lines) + 1):
        if pattern.match(lines[n - 1]) or (n > start and lines[n - 1].lstrip().startswith("[")):
            return n if pattern.match(lines[n - 1]) else start
    return start


# --- running a step --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How build steps run on this worker (decided once per worker): the host's sandbox
    policy, the limits, and the most network a step may have."""

    policy: sandbox_mod.Policy
    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    max_timeout: float
    # build_network: "host" lets pipeline files ask for the network; "none" never gives it.
    network: str = "host"
    # Only for steps run without a sandbox by a root worker (build_allow_unisolated): this
    # unprivileged user (build_user) rather than root.
    fallback_uid: int | None = None
    fallback_gid: int | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Sandbox:
        try:
            policy = sandbox_mod.Policy.from_config(cfg)
        except sandbox_mod.SandboxUnavailable as exc:
            raise SandboxError(str(exc)) from exc
        uid = gid = None
        if not policy.available and policy.allow_unisolated and os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(cfg.build_user)
            except KeyError as exc:
                raise SandboxError(f"build_user {cfg.build_user!r} does not exist on this host "
                                   "(builds never run as root)") from exc
            if entry.pw_uid == 0:
                raise SandboxError("build_user must not be root")
            uid, gid = entry.pw_uid, entry.pw_gid
        return cls(policy=policy, cpu_seconds=cfg.build_cpu_seconds,
                   memory_bytes=cfg.build_memory_mb * 1024 * 1024,
                   file_size_bytes=cfg.build_file_size_mb * 1024 * 1024,
                   max_timeout=cfg.build_timeout, network=cfg.build_network,
                   fallback_uid=uid, fallback_gid=gid)

    def describe(self) -> str:
        text = self.policy.describe()
        if not self.policy.available:  # (then the network is the host's: nothing can cut it)
            if self.fallback_uid is not None:
                return text + f"; steps run as uid {self.fallback_uid} (build_user) with the host's network"
            if self.policy.allow_unisolated:
                return text + (f"; steps run as this worker's own user (uid {os.geteuid()}), able "
                               "to read the data dir and the database, with the host's network")
            return text
        if self.network == "none":
            return text + "; build_network is \"none\": no step gets the network"
        return text + "; steps get the network only when the pipeline file says network = \"host\""


@dataclasses.dataclass
class Workspace:
    """A step's directory (``src``, the clone, and ``home``) and the sandbox job owning it."""

    root: Path
    job: sandbox_mod.Job
    cleanup: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)


def prepare_workspace(repo_path: Path, tag: str, sandbox: Sandbox) -> Workspace:
    """A new temp dir holding ``src`` (shallow clone of ``tag``) and ``home``, owned by the
    step's sandbox UID. The caller removes it with :func:`remove_workspace`. Raises
    :class:`SandboxError` when the step cannot be sandboxed and must not run without."""
    refusal = sandbox.policy.refusal()
    if refusal:
        raise SandboxError(refusal)
    root = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-"))
    cleanup = contextlib.ExitStack()
    try:
        (root / "home").mkdir()
        result = subprocess.run(
            ["git", "clone", "--quiet", "--depth", "1", "--branch", tag, "--no-tags",
             f"file://{repo_path}", str(root / "src")],
            env=git_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise SandboxError(f"git clone of {tag} failed: {result.stderr.strip()[-500:]}")
        try:
            job = cleanup.enter_context(sandbox_mod.job(sandbox.policy, root))
        except sandbox_mod.SandboxUnavailable as exc:
            raise SandboxError(str(exc)) from exc
        if not job.sandboxed and sandbox.fallback_uid is not None:
            sandbox_mod.hand_over(root, sandbox.fallback_uid, sandbox.fallback_gid)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        cleanup.close()
        raise
    return Workspace(root, job, cleanup)


def remove_workspace(workspace: Workspace) -> None:
    """Remove the directory, then give its UID back (never the other way round: the next job
    with that UID must not find anything of this one)."""
    shutil.rmtree(workspace.root, ignore_errors=True)
    workspace.cleanup.close()


def sweep_stale_workspaces(directory: Path | None = None) -> int:
    """Remove the workspaces of workers that died without cleaning up (SIGKILL); returns how
    many. A workspace's name carries its worker's pid; live workers' ones are left alone."""
    directory = directory or Path(tempfile.gettempdir())
    removed = 0
    for path in directory.glob(f"{WORKSPACE_PREFIX}*-*"):
        pid_text = path.name[len(WORKSPACE_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


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
    # SIGKILL the step's first process if the worker dies (see gitserver.proc); bwrap passes
    # that on (--die-with-parent). Applied after a user switch (a credential change clears it),
    # which subprocess does before preexec_fn.
    die_with_worker = proc.die_with_parent_hook()

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
