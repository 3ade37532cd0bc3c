"""The build step runner (gitserver.pipelines.build.run_step) on real processes: limits,
timeouts, cancel, output streaming. The job context is a small in-memory fake."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from gitserver.pipelines import build, pipelinefile, workspaces
from gitserver.policy.values import UidRange
from gitserver.process import sandbox as sandbox_mod

COORDS = build.Coordinates(repo="t/r", ref="refs/heads/main", commit="c" * 40, tag="repour-x",
                           readonly_url="http://127.0.0.1:1/git/t/r.git")


@dataclasses.dataclass
class FakeContext:
    """What run_step uses of a JobContext: log, cancelled, released."""

    chunks: list[tuple[float, bytes]] = dataclasses.field(default_factory=list)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)

    def log(self, data: bytes | str) -> None:
        self.chunks.append((time.monotonic(), data.encode() if isinstance(data, str) else data))

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def released(self) -> bool:
        return self.release.is_set()

    @property
    def text(self) -> str:
        return b"".join(c for _t, c in self.chunks).decode()


# No sandbox on purpose: these tests are about the runner (limits, timeouts, output), and
# run as any user; the sandbox itself is tested in test_sandbox.py and the functional tests.
UNSANDBOXED = sandbox_mod.Policy(uid_range=UidRange(2100000000, 10), hidden=(),
                                 problem="not wanted in this test", allow_unisolated=True)


def sandbox(**overrides: object) -> workspaces.Sandbox:
    values: dict[str, object] = dict(policy=UNSANDBOXED, cpu_seconds=60, memory_bytes=1 << 30,
                                     file_size_bytes=1 << 30, max_timeout=60.0)
    values.update(overrides)
    return workspaces.Sandbox(**values)  # type: ignore[arg-type]


def workspace(tmp_path: Path, policy: sandbox_mod.Policy = UNSANDBOXED) -> workspaces.Workspace:
    (tmp_path / "src").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    return workspaces.Workspace(tmp_path, sandbox_mod.Job(policy, None, tmp_path))


def run(tmp_path: Path, command: str, box: workspaces.Sandbox | None = None, ctx: FakeContext | None = None,
        timeout: float | None = None) -> tuple[build.StepOutcome, FakeContext]:
    ctx = ctx or FakeContext()
    spec = pipelinefile.StepSpec(name="s", argv=("/bin/sh", "-c", command), timeout=timeout)
    outcome = build.run_step(ctx, spec, workspace(tmp_path), COORDS, box or sandbox())  # type: ignore[arg-type]
    return outcome, ctx


def test_success_and_exit_status(tmp_path: Path) -> None:
    outcome, ctx = run(tmp_path, "echo out; echo err >&2; pwd; echo $HOME")
    assert outcome == build.StepOutcome("succeeded", 0, "")
    assert ctx.text == f"out\nerr\n{tmp_path / 'src'}\n{tmp_path / 'home'}\n"
    outcome, _ = run(tmp_path / "b", "exit 7")
    assert outcome == build.StepOutcome("failed", 7, "exited with status 7")


def test_wall_clock_timeout_kills_the_group(tmp_path: Path) -> None:
    t0 = time.monotonic()
    outcome, ctx = run(tmp_path, "sleep 30 & sleep 30", timeout=0.5)
    assert outcome.status == "failed" and outcome.message == "timed out after 0.5 seconds"
    assert time.monotonic() - t0 < 5 and "*** timed out" in ctx.text


def test_file_size_limit(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "head -c 2000000 /dev/zero > big", sandbox(file_size_bytes=1 << 20))
    assert outcome.status == "failed"
    # The shell reports its child's death (128 + signal number).
    assert outcome.message == "exited with status 153 (a process was killed by SIGXFSZ (file size limit))"
    outcome, _ = run(tmp_path / "exec", "exec head -c 2000000 /dev/zero > big", sandbox(file_size_bytes=1 << 20))
    assert outcome.message == "killed by SIGXFSZ (file size limit)"


def test_cpu_limit(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "while :; do :; done", sandbox(cpu_seconds=1))
    assert outcome == build.StepOutcome("failed", -24, "killed by SIGXCPU (CPU time limit)")


def test_memory_limit(tmp_path: Path) -> None:
    import sys

    outcome, ctx = run(tmp_path, f"{sys.executable} -c 'x = bytearray(400 * 1024 * 1024)'",
                       sandbox(memory_bytes=256 << 20))
    assert outcome.status == "failed" and "MemoryError" in ctx.text, ctx.text


def test_cancel_stops_the_step(tmp_path: Path) -> None:
    ctx = FakeContext()
    threading.Timer(0.5, ctx.cancel.set).start()
    t0 = time.monotonic()
    outcome, _ = run(tmp_path, "sleep 600", ctx=ctx)
    assert outcome.status == "cancelled" and time.monotonic() - t0 < 3


def test_release_stops_the_step(tmp_path: Path) -> None:
    ctx = FakeContext()
    threading.Timer(0.3, ctx.release.set).start()
    outcome, _ = run(tmp_path, "sleep 600", ctx=ctx)
    assert outcome.status == "released"


def test_output_is_streamed_while_the_step_runs(tmp_path: Path) -> None:
    t0 = time.monotonic()
    outcome, ctx = run(tmp_path, "echo first; sleep 1.5; echo second")
    assert outcome.status == "succeeded"
    first = next(t for t, c in ctx.chunks if b"first" in c)
    second = next(t for t, c in ctx.chunks if b"second" in c)
    assert first - t0 < 0.8 and second - first >= 1.0  # "first" was stored as soon as it came


def test_leftover_background_processes_do_not_hang_the_step(tmp_path: Path) -> None:
    t0 = time.monotonic()
    outcome, _ = run(tmp_path, "sleep 600 & echo done")
    assert outcome.status == "succeeded" and time.monotonic() - t0 < 5


def sandboxed_workspace(tmp_path: Path, env: dict[str, str] | None = None
                        ) -> tuple[workspaces.Sandbox, workspaces.Workspace, contextlib.ExitStack]:
    """A real sandboxed job (root only) on ``tmp_path``; the caller closes the stack."""
    from gitserver import config

    box = workspaces.Sandbox.from_config(config.load(environ={"GITSERVER_DATA_DIR": str(tmp_path / "data"),
                                                         **(env or {})}))
    assert box.policy.available, box.policy.problem  # as root, the sandbox must be there
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "home").mkdir()
    stack = contextlib.ExitStack()
    job = stack.enter_context(sandbox_mod.job(box.policy, root))
    return box, workspaces.Workspace(root, job), stack


@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need the worker to run as root")
def test_as_root_steps_run_sandboxed_with_a_uid_of_their_own(tmp_path: Path) -> None:
    box, ws, stack = sandboxed_workspace(tmp_path)
    with stack:
        ctx = FakeContext()
        script = "id -u; echo $$; pwd; grep '^Max processes' /proc/self/limits"
        outcome = build.run_step(ctx, pipelinefile.StepSpec(name="s", argv=("/bin/sh", "-c", script)),
                                 ws, COORDS, box)  # type: ignore[arg-type]
    assert outcome.status == "succeeded", ctx.text
    first, uid, pid, cwd, nproc = ctx.text.splitlines()
    assert nproc.split()[2:4] == ["4096", "4096"] == [str(box.policy.max_processes)] * 2  # sandbox_max_processes
    assert first.startswith(f"sandbox: uid {ws.job.uid},")
    assert int(uid) == ws.job.uid and box.policy.uid_range.first <= int(uid) <= box.policy.uid_range.last
    assert int(pid) <= 3  # one of the first processes of its own PID namespace
    assert cwd == str(ws.root / "src")


def test_step_that_closes_its_output_still_runs_to_the_end(tmp_path: Path) -> None:
    outcome, ctx = run(tmp_path, "echo bye; exec >&- 2>&-; sleep 0.7; touch finished")
    assert outcome.status == "succeeded" and ctx.text == "bye\n"
    assert (tmp_path / "src" / "finished").exists()


NET_PROBE = ("import socket, sys\n"
             "own = socket.create_server(('127.0.0.1', 0))\n"
             "socket.create_connection(own.getsockname(), timeout=2).close()\n"
             "print('own-loopback-ok')\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close()\n"
             "    print('host-port-reached')\n"
             "except OSError as exc:\n"
             "    print('host-port-unreachable', exc.errno)\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need the worker to run as root")
def test_network_none_by_default_and_host_when_asked(tmp_path: Path) -> None:
    import shutil
    import socket

    python = shutil.which("python3", path=build.DEFAULT_PATH)  # what a build step finds
    if python is None:
        pytest.skip(f"no python3 on the build PATH {build.DEFAULT_PATH}")
    listener = socket.create_server(("127.0.0.1", 0))  # a port of "the server", on the host
    port = listener.getsockname()[1]
    with listener:
        box, ws, stack = sandboxed_workspace(tmp_path)
        with stack:
            spec = pipelinefile.parse_pipeline('[[steps]]\nname = "net"\ncommand = ["x"]\n').steps[0]
            assert spec.network == "none"
            ctx = FakeContext()
            spec = dataclasses.replace(spec, argv=(python, "-c", NET_PROBE, str(port)))
            outcome = build.run_step(ctx, spec, ws, COORDS, box)  # type: ignore[arg-type]
            assert outcome.status == "succeeded", ctx.text
            assert "own-loopback-ok" in ctx.text and "host-port-unreachable" in ctx.text, ctx.text
            assert "no network (only its own loopback)" in ctx.text
            ctx = FakeContext()
            outcome = build.run_step(ctx, dataclasses.replace(spec, network="host"), ws, COORDS, box)  # type: ignore[arg-type]
            assert outcome.status == "succeeded" and "host-port-reached" in ctx.text, ctx.text
            assert "the host's network" in ctx.text


def test_network_host_beyond_build_network_fails_the_step_instead_of_running(tmp_path: Path) -> None:
    box = sandbox(network="none")
    ctx = FakeContext()
    spec = pipelinefile.StepSpec(name="s", argv=("touch", "ran"), network="host")
    outcome = build.run_step(ctx, spec, workspace(tmp_path), COORDS, box)  # type: ignore[arg-type]
    assert outcome.status == "failed" and outcome.exit_code is None
    assert outcome.message == ('the pipeline file asks for network = "host" but this server\'s '
                               'build_network is "none": the step was not run')
    assert outcome.message in ctx.text
    sandboxed = sandbox(network="none", policy=dataclasses.replace(UNSANDBOXED, problem=""))
    assert sandboxed.describe().endswith('; build_network is "none": no step gets the network')
    assert box.describe().endswith("with the host's network")  # unsandboxed: nothing cuts it
    assert not (tmp_path / "src" / "ran").exists()  # the step never started


def test_build_network_setting_is_checked() -> None:
    from gitserver import config
    from gitserver.policy.errors import ConfigError

    assert config.load(environ={}).build_network == "host"
    assert config.load(environ={"GITSERVER_BUILD_NETWORK": "none"}).build_network == "none"
    with pytest.raises(ConfigError, match="setting build_network: expected one of host, none, got 'off'"):
        config.load(environ={"GITSERVER_BUILD_NETWORK": "off"})


def test_unisolated_steps_are_refused_unless_the_operator_allows_them(tmp_path: Path) -> None:
    """A worker that is not root cannot give steps another user; by default it refuses to run
    them as itself (with the database and every repository readable)."""
    policy = dataclasses.replace(UNSANDBOXED, problem="bwrap is not installed", allow_unisolated=False)
    box = sandbox(policy=policy)
    with pytest.raises(workspaces.SandboxError) as caught:
        workspaces.prepare_workspace(tmp_path / "no-such-repo", "repour-x", box)
    message = str(caught.value)
    assert message.startswith("the job cannot be sandboxed: bwrap is not installed; it was not run")
    assert "build.allow_unisolated" in message and "not sandboxed: bwrap is not installed" in box.describe()


def test_allow_unisolated_setting() -> None:
    from gitserver import config

    assert config.load(environ={}).build_allow_unisolated is False
    assert config.load(environ={"GITSERVER_BUILD_ALLOW_UNISOLATED": "1"}).build_allow_unisolated is True


@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need the worker to run as root")
def test_step_environment_never_reaches_the_root_sandbox_launcher(tmp_path: Path) -> None:
    """The pipeline file's env and ci.variable options are the pusher's: a loader variable
    among them must reach only the step (as the job's UID), never bwrap or setpriv (root)."""
    box, ws, stack = sandboxed_workspace(tmp_path)
    with stack:
        ctx = FakeContext()
        spec = pipelinefile.StepSpec(name="s", argv=("/bin/sh", "-c", "echo preload=$LD_PRELOAD"))
        outcome = build.run_step(ctx, spec, ws, COORDS, box,  # type: ignore[arg-type]
                                 variables=(("LD_PRELOAD", "/nonexistent/preload.so"),))
    assert outcome.status == "succeeded", ctx.text
    # ld.so complains once for each program started with the variable: only the step's shell.
    assert ctx.text.count("cannot be preloaded") == 1, ctx.text
    assert "preload=/nonexistent/preload.so" in ctx.text
