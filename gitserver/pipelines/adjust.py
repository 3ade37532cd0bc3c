"""Alignment ("adjust") providers, and the supervised command runner they and Repour's git work use.

Repour aligns a source tree before a build: for Maven it runs PME (pom-manipulation-ext),
for Gradle GME (gradle-manipulator), for npm projects project-manipulator. Each tool is a Java
command line configured by the operator; the provider builds the argument list the way the tool
expects (configured parameters, then the request's ``defaultAlignmentParams``, the temporary-build
suffix, and the user's extra parameters), runs it in the work tree, and reads the tool's result
file. The version in that result names the tag. ``noop`` changes nothing; ``process`` runs any
configured command and reads an optional JSON result.

Which provider runs (:func:`choose_provider`): the tool of the request's ``buildType`` when its
command is configured; otherwise the ``process`` command when one is configured; otherwise
``noop`` (docs/contract.md, Pipelines and archives).

Nothing here touches the database: a provider gets a work tree, the request and a runner, so it
is tested with a stand-in command and no Java.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gitserver.config import Config
from gitserver.proc import chain, die_with_parent_hook
from gitserver.sandbox import Job

log = logging.getLogger(__name__)

# Exit code Repour reports for errors the caller made (missing ref, bad parameter, unreachable
# origin): clients treat it as "fix your request", not "retry".
USER_ERROR_EXIT_CODE = 10
# How much of a failed command's stderr goes into an error body (the tail: the reason is last).
STDERR_EXCERPT = 8 * 1024
# How often a running command is checked for cancellation and timeout.
POLL_SECONDS = 0.2

# PNC's build types (pnc-api BuildType), and NODEJS, which older clients sent for npm.
BUILD_TYPES = ("MVN", "NPM", "GRADLE", "SBT", "MVN_RPM", "RPM", "NODEJS")
DEFAULT_BUILD_TYPE = "MVN"
# Build type → the tool that aligns it, as Reqour picks it (AdjustProviderPickerImpl): MVN_RPM
# is a Maven build; RPM has no alignment tool (refused with Reqour's message).
TOOL_OF_BUILD_TYPE = {"MVN": "pme", "MVN_RPM": "pme", "GRADLE": "gme", "NPM": "project-manipulator",
                      "NODEJS": "project-manipulator", "SBT": "smeg"}
UNSUPPORTED_BUILD_TYPES = {"RPM": "Alignment for RPM builds is not supported yet"}
ALIGNMENT_PREFERENCES = ("PREFER_PERSISTENT", "PREFER_TEMPORARY")

# Where the tools write their results, most wanted first, as Reqour looks for them: PME's
# alignment report (PME >= 3.x), its manipulation.json, and the result file PME wrote until 2019;
# GME's alignment report, then the manipulation.json a Gradle build applies.
PME_RESULT_FILES = (Path("target") / "alignmentReport.json", Path("target") / "manipulation.json",
                    Path("target") / "pom-manip-ext-result.json")
GME_RESULT_FILES = (Path("build") / "alignmentReport.json", Path("manipulation.json"),
                    Path("build") / "manipulation.json")
GME_KEPT_FILES = (Path("manipulation.json"), Path("build") / "manipulation.json")
# SMEG (sbt): the tasks it runs and the report it writes, as Reqour's SbtProvider has them.
SMEG_TASKS = ("manipulate", "writeReport")
SMEG_RESULT_FILE = Path("manipulations.json")
# The file PME/GME back removed repositories up to (``-DrepoRemovalBackup=<file>``), and
# Reqour's default name when the parameter is not given.
REPO_REMOVAL_PARAMETER = "-DrepoRemovalBackup"
DEFAULT_REMOVED_REPOSITORIES_FILE = "repositories-backup.xml"
MAX_RESULT_BYTES = 16 * 1024 * 1024
# adjustParameters keys holding extra command-line parameters: the current PNC key, then the
# older tool-specific ones.
PARAMETER_KEYS = {
    "pme": ("ALIGNMENT_PARAMETERS", "CUSTOM_PME_PARAMETERS"),
    "gme": ("ALIGNMENT_PARAMETERS", "CUSTOM_GRADLE_PARAMETERS"),
    "project-manipulator": ("ALIGNMENT_PARAMETERS", "CUSTOM_PROJECT_MANIPULATOR_PARAMETERS"),
    "smeg": ("ALIGNMENT_PARAMETERS",),
    "process": ("ALIGNMENT_PARAMETERS",),
}


# --- errors and the command runner ------------------------------------------------------------

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
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _read(fh: Any) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace")


class Runner(Protocol):
    """How a provider runs its tool (tests pass a recording fake)."""

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                 timeout: float) -> CommandResult: ...


# --- the request and the outcome ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AdjustRequest:
    """The parts of an /adjust request that shape the tool's command line."""

    build_type: str = DEFAULT_BUILD_TYPE
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    default_alignment_params: str = ""
    temp_build: bool = False
    temp_build_timestamp: str | None = None
    alignment_preference: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AdjustRequest:
        return cls(build_type=spec.get("buildType") or DEFAULT_BUILD_TYPE,
                   parameters=spec.get("adjustParameters") or {},
                   default_alignment_params=spec.get("defaultAlignmentParams") or "",
                   temp_build=spec.get("tempBuild") is True,
                   temp_build_timestamp=spec.get("tempBuildTimestamp") or None,
                   alignment_preference=spec.get("alignmentPreference") or None)


@dataclasses.dataclass(frozen=True)
class AdjustOutcome:
    adjust_type: str
    version: str | None
    result_data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Provider:
    """One configured provider: ``kind`` is pme | gme | project-manipulator | process | noop."""

    kind: str
    command: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()


def choose_provider(config: Config, build_type: str) -> Provider:
    """The provider for ``build_type`` under ``config`` (see the module docstring)."""
    if build_type in UNSUPPORTED_BUILD_TYPES:
        raise ProcessingError(UNSUPPORTED_BUILD_TYPES[build_type], error_type="AdjustCommandError")
    tools = {"pme": (config.adjust_mvn_command, config.adjust_mvn_parameters),
             "gme": (config.adjust_gradle_command, config.adjust_gradle_parameters),
             "project-manipulator": (config.adjust_nodejs_command, config.adjust_nodejs_parameters),
             "smeg": (config.adjust_sbt_command, config.adjust_sbt_parameters)}
    kind = TOOL_OF_BUILD_TYPE.get(build_type, "")
    command, parameters = tools.get(kind, ("", ""))
    if kind and command.strip():
        return Provider(kind, tuple(shlex.split(command)), tuple(shlex.split(parameters)))
    if config.adjust_process_command.strip():
        return Provider("process", tuple(shlex.split(config.adjust_process_command)))
    return Provider("noop")


# Tools whose extra parameters must all be options. Repour (util.get_extra_parameters) lets
# PME and GME have bare words (``-s settings.xml``, ``-f sub/pom.xml``): their command lines
# take option values as separate words.
DASH_ONLY_KINDS = frozenset({"project-manipulator", "smeg", "process"})


def user_parameters(kind: str, parameters: Mapping[str, Any]) -> list[str]:
    """The caller's extra tool parameters. For project-manipulator and ``process`` each must be
    an option (start with ``-``), as Repour requires there: a bare word could name a goal or file
    the operator never meant to allow."""
    out: list[str] = []
    for key in PARAMETER_KEYS.get(kind, ()):
        text = parameters.get(key)
        if not text:
            continue
        if not isinstance(text, str):
            raise ProcessingError(f"adjustParameters.{key} must be a string",
                                  error_type="AdjustCommandError")
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise ProcessingError(f"adjustParameters.{key} cannot be split into parameters: {exc}",
                                  error_type="AdjustCommandError") from exc
        for word in words:
            if kind in DASH_ONLY_KINDS and not word.startswith("-"):
                desc = (f'Parameters that do not start with dash "-" are not allowed. '
                        f'Found "{word}" in "{text}".')
                raise ProcessingError(desc, stderr=desc, error_type="AdjustCommandError")
        out += words
        break  # the first key present wins: the newer key replaces the older one
    return out


def temp_build_parameters(request: AdjustRequest, config: Config) -> list[str]:
    """Parameters of a temporary build: the version suffix marks its artifacts as temporary."""
    if not request.temp_build:
        return []
    timestamp = request.temp_build_timestamp or "temporary"
    return [p.replace("{timestamp}", timestamp) for p in shlex.split(config.adjust_temp_build_parameters)]


def build_command(provider: Provider, request: AdjustRequest, config: Config,
                  extra: Sequence[str] = ()) -> list[str]:
    """The tool's argument list: configured command and parameters (which the caller cannot
    override), the build configuration's default parameters, the temporary-build parameters,
    the caller's parameters, then what the provider itself needs (``extra``)."""
    return [*provider.command, *provider.parameters, *request.default_alignment_params.split(),
            *temp_build_parameters(request, config), *user_parameters(provider.kind, request.parameters),
            *extra]


# --- running a provider ---------------------------------------------------------------------

def tool_env(home: Path, base: Mapping[str, str] | None = None,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A small environment for alignment tools: no server secrets (database URL, tokens)."""
    base = os.environ if base is None else base
    env = {"PATH": base.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "GIT_TERMINAL_PROMPT": "0"}
    for name in ("JAVA_HOME", "MAVEN_OPTS", "JAVA_TOOL_OPTIONS"):
        if base.get(name):
            env[name] = base[name]
    env.update(extra or {})
    return env


def run_provider(provider: Provider, work_dir: Path, request: AdjustRequest, config: Config,
                 runner: Runner, scratch: Path) -> AdjustOutcome:
    """Run ``provider`` in ``work_dir``; ``scratch`` is a private directory outside the tree
    (the tool's HOME and result files that must not end up in the commit)."""
    if provider.kind == "noop":
        return AdjustOutcome("noop", None, {})
    env = tool_env(scratch)
    if provider.kind == "pme":
        return _run_pme(provider, work_dir, request, config, runner, env)
    if provider.kind == "gme":
        return _run_gme(provider, work_dir, request, config, runner, env)
    if provider.kind == "project-manipulator":
        return _run_project_manipulator(provider, work_dir, request, config, runner, env, scratch)
    if provider.kind == "smeg":
        return _run_smeg(provider, work_dir, request, config, runner, env)
    if provider.kind == "process":
        return _run_process(provider, work_dir, request, config, runner, env, scratch)
    raise ValueError(f"unknown adjust provider {provider.kind!r}")


def _check(result: CommandResult, kind: str) -> None:
    if result.exit_code != 0:
        raise ProcessingError(f"the alignment tool ({kind}) failed with exit code {result.exit_code}",
                              cmd=result.argv, exit_code=result.exit_code,
                              stderr=result.stderr or result.stdout, error_type="AdjustCommandError")


def split_file_option(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """``argv`` without its ``-f``/``--file`` option (``--file=x``, ``--file x``, ``-f x``),
    and that option's value: where Repour runs PME (and drops the option, which made
    PME 2.11/2.12 write a broken result file)."""
    kept: list[str] = []
    location = None
    words = iter(argv)
    for word in words:
        if word in ("-f", "--file"):
            location = next(words, None)
        elif word.startswith("--file="):
            location = word[len("--file="):]
        else:
            kept.append(word)
    return kept, location


def _run_pme(provider: Provider, work_dir: Path, request: AdjustRequest, config: Config,
             runner: Runner, env: dict[str, str]) -> AdjustOutcome:
    argv = build_command(provider, request, config)
    # PME runs where the root pom.xml is; a --file=<dir>/pom.xml parameter moves it there
    # (and is dropped: older PME versions wrote a broken result file with it).
    kept, location = split_file_option(argv[len(provider.command):])
    run_dir = work_dir if location is None else _inside(work_dir, location.removesuffix("pom.xml") or ".")
    argv = [*provider.command, *kept]
    _check(runner(argv, cwd=run_dir, env=env, timeout=config.adjust_timeout), "pme")
    data = read_result(run_dir, PME_RESULT_FILES, remove=PME_RESULT_FILES)
    result = alignment_result_data(data, removed_repositories(run_dir, kept))
    return AdjustOutcome("pme", result_version(result), result)


def _run_gme(provider: Provider, work_dir: Path, request: AdjustRequest, config: Config,
             runner: Runner, env: dict[str, str]) -> AdjustOutcome:
    argv = build_command(provider, request, config, extra=[f"--target={work_dir}"])
    _check(runner(argv, cwd=work_dir, env=env, timeout=config.adjust_timeout), "gme")
    # manipulation.json stays in the tree: the Gradle build applies it (that is its purpose).
    removable = tuple(p for p in GME_RESULT_FILES if p not in GME_KEPT_FILES)
    data = read_result(work_dir, GME_RESULT_FILES, remove=removable)
    if data is None:
        raise ProcessingError("the alignment tool (gme) wrote no alignment result "
                              f"({', '.join(str(p) for p in GME_RESULT_FILES)})",
                              cmd=argv, exit_code=1, error_type="AdjustCommandError")
    result = alignment_result_data(data, removed_repositories(work_dir, argv))
    return AdjustOutcome("gme", result_version(result), result)


def _run_project_manipulator(provider: Provider, work_dir: Path, request: AdjustRequest,
                             config: Config, runner: Runner, env: dict[str, str],
                             scratch: Path) -> AdjustOutcome:
    result_file = scratch / "project-manipulator-result.json"
    argv = build_command(provider, request, config, extra=[f"--result={result_file}"])
    _check(runner(argv, cwd=work_dir, env=env, timeout=config.adjust_timeout), "project-manipulator")
    data = _read_json_file(result_file, remove=True)
    result = project_manipulator_result_data(data)
    return AdjustOutcome("project-manipulator", result_version(result), result)


def _run_smeg(provider: Provider, work_dir: Path, request: AdjustRequest, config: Config,
              runner: Runner, env: dict[str, str]) -> AdjustOutcome:
    """SMEG, the sbt plugin: ``sbt <parameters> manipulate writeReport`` (Reqour's SbtProvider);
    its report ``manipulations.json`` is already in Repour's shape."""
    argv = build_command(provider, request, config, extra=SMEG_TASKS)
    _check(runner(argv, cwd=work_dir, env=env, timeout=config.adjust_timeout), "smeg")
    data = read_result(work_dir, (SMEG_RESULT_FILE,), remove=(SMEG_RESULT_FILE,))
    result = alignment_result_data(data, [])
    return AdjustOutcome("smeg", result_version(result), result)


# --- result files (pure: a dict in, Repour's adjustResultData out) ------------------------------

def read_result(root: Path, candidates: Sequence[Path], remove: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The first of ``candidates`` (relative to ``root``) that exists, as a dict; None when the
    tool wrote none. The ``remove`` files are deleted either way (they must not be committed)."""
    data = None
    for name in candidates:
        if (root / name).is_file():
            data = _read_json_file(root / name)
            break
    for name in remove:
        with contextlib.suppress(OSError):
            (root / name).unlink()
    return data


def _gav(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {k: value.get(k) if isinstance(value.get(k), str) else None for k in ("groupId", "artifactId", "version")}


def alignment_result_data(data: Mapping[str, Any] | None, removed: list[dict[str, Any]]) -> dict[str, Any]:
    """Repour's ``adjustResultData`` from a PME or GME result file, in any of its shapes:

    * the old ``pom-manip-ext-result.json`` already holds ``VersioningState`` (kept as is);
    * PME's ``alignmentReport.json``: the root GAV under ``gav`` (PME's json.PME class), or
      ``rootGAV`` / ``executionRoot`` in other versions;
    * GME's ``manipulation.json``: ``group``, ``name``, ``version``.

    ``RemovedRepositories`` come from the repository backup file (:func:`removed_repositories`)
    unless the result file has them."""
    data = dict(data or {})
    if isinstance(data.get("VersioningState"), Mapping):
        return {**data, "RemovedRepositories": data.get("RemovedRepositories", removed)}
    root = _gav(data.get("gav")) or _gav(data.get("rootGAV")) or _gav(data.get("executionRoot"))
    if root is None and any(k in data for k in ("group", "name", "version")):
        root = {"groupId": data.get("group") if isinstance(data.get("group"), str) else None,
                "artifactId": data.get("name") if isinstance(data.get("name"), str) else None,
                "version": data.get("version") if isinstance(data.get("version"), str) else None}
    if root is None:
        return {}
    return {"VersioningState": {"executionRootModified": root}, "RemovedRepositories": removed}


def project_manipulator_result_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """project-manipulator's result (``name``, ``version``, dependency maps) with Repour's
    ``VersioningState`` added (groupId null, artifactId the package name)."""
    if not data:
        return {}
    name = data.get("name") if isinstance(data.get("name"), str) else None
    version = data.get("version") if isinstance(data.get("version"), str) else None
    return {**data, "VersioningState": {"executionRootModified": {"groupId": None, "artifactId": name,
                                                                 "version": version}},
            "RemovedRepositories": []}


def result_version(result: Mapping[str, Any]) -> str | None:
    """``VersioningState.executionRootModified.version``: the tag's name."""
    return _versioning_state_version(result)


def removed_repositories(work_dir: Path, argv: Sequence[str]) -> list[dict[str, Any]]:
    """The repositories PME/GME removed, from the backup file named by
    ``-DrepoRemovalBackup=<file>`` (else Reqour's default ``repositories-backup.xml``) in the
    work tree, in Repour's shape ``{"releases", "snapshots", "name", "id", "url"}``."""
    name = DEFAULT_REMOVED_REPOSITORIES_FILE
    for word in argv:
        key, sep, value = word.partition("=")
        if key == REPO_REMOVAL_PARAMETER and sep and value:
            name = value
    try:
        path = _inside_file(work_dir, name)
    except ProcessingError:
        return []
    if path is None:
        return []
    return parse_removed_repositories(path.read_bytes()[:MAX_RESULT_BYTES])


def parse_removed_repositories(xml: bytes) -> list[dict[str, Any]]:
    """``<repository>`` elements of a Maven settings/profile backup, as Repour reads them:
    ``releases``/``snapshots`` are true unless their ``<enabled>`` says otherwise. A file that is
    not XML gives nothing (the tool's business, not the caller's)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    out = []
    for repo in root.iter():
        if _local(repo.tag) != "repository":
            continue
        entry: dict[str, Any] = {"releases": True, "snapshots": True, "name": "", "id": "", "url": ""}
        for child in repo:
            tag = _local(child.tag)
            if tag in ("id", "name", "url") and child.text:
                entry[tag] = child.text.strip()
            elif tag in ("releases", "snapshots"):
                for enabled in child:
                    if _local(enabled.tag) == "enabled" and enabled.text:
                        entry[tag] = enabled.text.strip() == "true"
        out.append(entry)
    return out


def _local(tag: Any) -> str:
    return str(tag).rpartition("}")[2]


def _inside_file(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it is a regular file inside ``root`` (not through a symlink out)."""
    target = (root / relative).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep):
        raise ProcessingError(f"{relative!r} points outside the repository", error_type="AdjustCommandError")
    return target if target.is_file() else None


def _run_process(provider: Provider, work_dir: Path, request: AdjustRequest, config: Config,
                 runner: Runner, env: dict[str, str], scratch: Path) -> AdjustOutcome:
    """Any operator-chosen command. It learns the request through the environment and may
    write a JSON object to ``$GITSERVER_ADJUST_RESULT``; its ``version`` names the tag."""
    result_file = scratch / "process-result.json"
    env = {**env, "GITSERVER_ADJUST_RESULT": str(result_file),
           "GITSERVER_BUILD_TYPE": request.build_type,
           "GITSERVER_TEMP_BUILD": "true" if request.temp_build else "false",
           "GITSERVER_ADJUST_PARAMETERS": json.dumps(dict(request.parameters))}
    argv = build_command(provider, request, config)
    _check(runner(argv, cwd=work_dir, env=env, timeout=config.adjust_timeout), "process")
    data = _read_json_file(result_file, remove=True)
    version = data.get("version")
    return AdjustOutcome("process", version if isinstance(version, str) and version else None, data)


def _inside(root: Path, relative: str) -> Path:
    """``root/relative`` if it stays inside ``root`` (compared with a trailing separator)."""
    target = (root / relative).resolve()
    if target != root.resolve() and not str(target).startswith(str(root.resolve()) + os.sep):
        raise ProcessingError(f"--file points outside the repository: {relative!r}",
                              error_type="AdjustCommandError")
    if not target.is_dir():
        raise ProcessingError(f"--file names a directory that does not exist: {relative!r}",
                              error_type="AdjustCommandError")
    return target


def _read_json_file(path: Path, remove: bool = False) -> dict[str, Any]:
    """A tool's result file as a dict; {} when it wrote none (the tag then falls back to
    ``repour-<commit>``). A file that is not a JSON object is the tool's failure.

    The tool wrote it in its sandbox, and could have made it (or a directory on its way) a
    symbolic link to a server file; the caller's paths hold none, so any link is the tool's
    and is refused rather than followed."""
    if any(p.is_symlink() for p in (path, *path.parents)):
        raise ProcessingError(f"the alignment tool's result file {path.name} is a symbolic link or "
                              "lies under one: not read", exit_code=1, error_type="AdjustCommandError")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProcessingError(f"the alignment tool's result file {path.name} is not valid JSON: {exc}",
                              exit_code=1, error_type="AdjustCommandError") from exc
    finally:
        if remove:
            with contextlib.suppress(OSError):
                path.unlink()
    if not isinstance(data, dict):
        raise ProcessingError(f"the alignment tool's result file {path.name} is not a JSON object",
                              exit_code=1, error_type="AdjustCommandError")
    return data


def _versioning_state_version(data: Mapping[str, Any]) -> str | None:
    """``VersioningState.executionRootModified.version`` of a PME/GME result, if present."""
    try:
        version = data["VersioningState"]["executionRootModified"]["version"]
    except (KeyError, TypeError):
        return None
    return version if isinstance(version, str) and version else None
