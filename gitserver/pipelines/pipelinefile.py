"""The pipeline file, ``.gitserver/pipeline.toml`` of the archived tree: parsed and checked (pure).

The file (documented in the README, "Pipelines")::

    build_tags = true               # optional: also build pushed tags (default: branches only)
    network = "host"                # optional: the steps' network, "none" (default) or "host"

    [[steps]]
    name = "test"                   # unique; letters, digits, ".", "_", "-", " "
    command = "make test"           # a string runs with /bin/sh -c; a list runs as is
    timeout = 600                   # optional, seconds (capped at the server's build_timeout)
    env = { MODE = "ci" }           # optional, added to the clean environment
    network = "none"                # optional, this step's network (default: the file's)

A malformed file is refused with a message naming the file and the line; the steps run in
:mod:`gitserver.pipelines.build`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

from gitserver.process import sandbox as sandbox_mod

PIPELINE_FILE = ".gitserver/pipeline.toml"
MAX_PIPELINE_FILE = 64 * 1024
MAX_STEPS = 50
STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
STEP_KEYS = {"name", "command", "timeout", "env", "network"}
TOP_LEVEL_KEYS = {"steps", "build_tags", "network"}
# A step's network when its pipeline file names none.
DEFAULT_STEP_NETWORK = "none"


class PipelineFileError(Exception):
    """The pipeline file is malformed; the message names the file and the line."""


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
