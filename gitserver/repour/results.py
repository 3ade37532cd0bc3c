"""What an operation answers: the alignment tools' result files read into Repour's
``adjustResultData``, and Repour's error bodies.

The result-file readers are pure (a dict in, Repour's shape out) except :func:`read_result`,
:func:`read_json_file` and :func:`removed_repositories`, which read what the tool wrote in the
work tree (never through a symbolic link the tool made).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gitserver.repour.command import ProcessingError

# The file PME/GME back removed repositories up to (``-DrepoRemovalBackup=<file>``), and
# Reqour's default name when the parameter is not given.
REPO_REMOVAL_PARAMETER = "-DrepoRemovalBackup"
DEFAULT_REMOVED_REPOSITORIES_FILE = "repositories-backup.xml"
MAX_RESULT_BYTES = 16 * 1024 * 1024


def read_result(root: Path, candidates: Sequence[Path], remove: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The first of ``candidates`` (relative to ``root``) that exists, as a dict; None when the
    tool wrote none. The ``remove`` files are deleted either way (they must not be committed)."""
    data = None
    for name in candidates:
        if (root / name).is_file():
            data = read_json_file(root / name)
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
    return parse_removed_repositories(read_bounded(path)[:MAX_RESULT_BYTES])


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


def read_bounded(path: Path) -> bytes:
    """At most MAX_RESULT_BYTES + 1 bytes of a file the tool wrote: the server's memory is not
    the tool's to fill, and a FIFO put in the file's place must not block the server (opened
    non-blocking, and read only when it is a regular file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        chunks, size = [], 0
        while size <= MAX_RESULT_BYTES and (chunk := fh.read(MAX_RESULT_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


def read_json_file(path: Path, remove: bool = False) -> dict[str, Any]:
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
        raw = read_bounded(path)
        if len(raw) > MAX_RESULT_BYTES:
            raise ValueError(f"it is larger than {MAX_RESULT_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
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



# --- Repour's bodies of a failed operation ------------------------------------------------------

def described_error_body(exc: ProcessingError) -> dict[str, Any]:
    """Repour's body for a described error: the error's fields, ``error_type`` and
    ``error_traceback``. Repour puts a hash of its stack trace there; ours is a reference the
    server's log line carries, so a stack trace never reaches the caller."""
    return {**exc.body(), "error_traceback": uuid.uuid4().hex}


def internal_error_body(reference: str) -> dict[str, Any]:
    return {"error_type": "InternalError", "error_traceback": reference,
            "desc": f"the server failed to handle this request; the error was logged as {reference}"}


def cancelled_body(task_id: str | None) -> dict[str, Any]:
    """What a synchronous caller gets when /cancel stopped its request (130: killed by a signal,
    as shells report it)."""
    desc = f"task {task_id} was cancelled" if task_id else "the request was cancelled"
    return described_error_body(ProcessingError(desc, exit_code=130, error_type="Cancelled"))
