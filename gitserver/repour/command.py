"""The supervised command runner of Repour's git work and the alignment tools, and the error
Repour clients expect when one fails.

A command runs from an argument list (never a shell), in its own process group, with a
wall-clock timeout and a stop check polled while it runs (cancel, lost lease); its output goes
to temporary files, and credentials in URLs are redacted from everything that reaches a body,
a log or a pipeline record (:func:`redact`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gitserver.process.children import chain, die_with_parent_hook, popen_wait, stop_group
from gitserver.process.sandbox import Job

# Exit code Repour reports for errors the caller made (missing ref, bad parameter, unreachable
# origin): clients treat it as "fix your request", not "retry".
USER_ERROR_EXIT_CODE = 10
# How much of a failed command's stderr goes into an error body (the tail: the reason is last).
STDERR_EXCERPT = 8 * 1024
# How often a running command is checked for cancellation and timeout.
POLL_SECONDS = 0.2
# How long a killed tool's process group gets to be reaped after SIGKILL.
KILL_WAIT = 10.0


class ProcessingError(Exception):
    """A failure Repour clients expect as a 400 ``{"desc", "cmd", "exit_code", "stderr",
    "error_type"}``. The message is written for the caller; ``stderr`` is the tool's own."""

    error_type = "ProcessingError"

    def __init__(self, desc: str, *, cmd: Sequence[str] = (), exit_code: int = USER_ERROR_EXIT_CODE,
                 stderr: str = "", error_type: str | None = None) -> None:
        super().__init__(desc)
        self.desc = desc
        self.cmd = [redact(c) for c in cmd]
        self.exit_code = exit_code
        self.stderr = redact(stderr[-STDERR_EXCERPT:])
        if error_type:
            self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return {"desc": self.desc, "cmd": self.cmd, "exit_code": self.exit_code,
                "stderr": self.stderr, "error_type": self.error_type}


# The user part of every URL in a text, up to the authority's last "@": a token may be the
# user name alone (https://ghp_x@github.com), and a password may itself contain "@".
_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#'\"]*@")


def redact(text: str) -> str:
    """Hide the credentials of every ``scheme://userinfo@host`` in ``text`` (a command argument,
    an error message, a tool's stderr): they reach pipeline errors, logs and Repour bodies."""
    return _URL_USERINFO.sub(r"\1***@", text)


@dataclasses.dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str


# Called while a command runs; raises (e.g. JobCancelled) to stop it. The child is killed first.
StopCheck = Callable[[], None]


def run_command(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                stop: StopCheck | None = None, output: Callable[[str], None] | None = None,
                input_text: str | None = None, pass_fds: Sequence[int] = (),
                sandbox: Job | None = None, network: str = "host") -> CommandResult:
    """Run ``argv`` (never through a shell) in its own process group, with a wall-clock
    ``timeout``; ``stop`` is called every :data:`POLL_SECONDS` and whatever it raises ends the
    command (the whole process group is killed, so a tool's children die with it).

    Output goes to temporary files, not pipes, so a chatty child can never block on a full pipe
    while we wait for it. ``output`` receives the combined text afterwards (the pipeline log).

    The command gets SIGKILL when the process running it dies (an API process serving a
    synchronous request, or a worker, killed with SIGKILL): its own session would otherwise
    keep it running until its timeout. The signal is tied to the *thread* that forks; callers
    are worker job threads and gunicorn request threads, which outlive the call (see
    :func:`die_with_parent_hook`).

    With ``sandbox`` (alignment tools: code from the repository or its origin runs) the command
    runs in that job's sandbox with ``network``; its processes die with it (PID namespace).
    """
    argv = [str(a) for a in argv]
    started, start_dir = argv, cwd
    if sandbox is not None and sandbox.sandboxed:  # bwrap starts in the job's root, enters cwd itself
        started, start_dir = sandbox.command(argv, cwd=cwd, network=network), sandbox.root
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(started, cwd=start_dir,
                                    env=dict(env), stdout=out, stderr=err,
                                    stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                    start_new_session=True, pass_fds=tuple(pass_fds),
                                    preexec_fn=_preexec(sandbox))  # noqa: PLW1509
        except subprocess.SubprocessError as exc:  # the parent-death set-up failed in the child
            raise ProcessingError(f"cannot run {argv[0]}: setting up the process failed", cmd=argv,
                                  exit_code=127, error_type="CommandError", stderr=str(exc)) from exc
        except OSError as exc:
            raise ProcessingError(f"cannot run {argv[0]}: {exc.strerror}", cmd=argv, exit_code=127,
                                  error_type="CommandError", stderr=str(exc)) from exc
        try:
            if input_text is not None:
                _feed(proc, input_text)
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if stop is not None:
                    stop()
                if time.monotonic() > deadline:
                    _kill(proc)
                    raise ProcessingError(f"{Path(argv[0]).name} did not finish within {timeout:g} s",
                                          cmd=argv, exit_code=124, error_type="CommandTimeout")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(POLL_SECONDS)
        except BaseException:
            _kill(proc)
            raise
        stdout, stderr = _read(out), _read(err)
    if output is not None and (stdout or stderr):
        output(f"$ {shlex.join(redact(a) for a in argv)}\n{redact(stdout)}{redact(stderr)}")
    return CommandResult(argv=argv, exit_code=proc.returncode, stdout=stdout, stderr=stderr)


def _preexec(sandbox: Job | None) -> Callable[[], None]:
    if sandbox is None:
        return die_with_parent_hook()
    return chain(sandbox.limits_hook(), die_with_parent_hook())


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode())
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the tool's whole process group at once (a cancel or a timeout: nothing to save)."""
    if proc.poll() is not None:
        return  # reaped: its pid may belong to someone else by now
    stop_group(proc.pid, popen_wait(proc), grace=0, kill_wait=KILL_WAIT)


def _read(fh: Any) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace")
