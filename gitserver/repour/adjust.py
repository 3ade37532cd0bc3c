"""Alignment ("adjust") providers: which tool aligns a build type, and its command line.

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

import dataclasses
import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gitserver.config import Config
from gitserver.repour.command import CommandResult, ProcessingError
from gitserver.repour.results import (
    alignment_result_data,
    project_manipulator_result_data,
    read_json_file,
    read_result,
    removed_repositories,
    result_version,
)

log = logging.getLogger(__name__)


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
# adjustParameters keys holding extra command-line parameters: the current PNC key, then the
# older tool-specific ones.
PARAMETER_KEYS = {
    "pme": ("ALIGNMENT_PARAMETERS", "CUSTOM_PME_PARAMETERS"),
    "gme": ("ALIGNMENT_PARAMETERS", "CUSTOM_GRADLE_PARAMETERS"),
    "project-manipulator": ("ALIGNMENT_PARAMETERS", "CUSTOM_PROJECT_MANIPULATOR_PARAMETERS"),
    "smeg": ("ALIGNMENT_PARAMETERS",),
    "process": ("ALIGNMENT_PARAMETERS",),
}



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
    data = read_json_file(result_file, remove=True)
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
    data = read_json_file(result_file, remove=True)
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


