"""The locks in requirements/ match pyproject.toml, so every install is the one CI tested.

``./dev lock`` regenerates them; a dependency added or changed without it fails here, before a
fresh machine installs something nobody ran.
"""

from __future__ import annotations

import re
import runpy
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
lockdigest = runpy.run_path(str(LOCKS / "lockdigest.py"))
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)")


def pins(lock: Path) -> dict[str, list[tuple[Version, list[str]]]]:
    """Each locked package: its versions (one per marker), each with the hashes that follow it."""
    found: dict[str, list[tuple[Version, list[str]]]] = {}
    current: list[str] | None = None
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            current = []
            found.setdefault(canonicalize_name(match[1]), []).append((Version(match[2]), current))
        elif current is not None and (hashed := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.append(hashed[1])
    return found


def requirements(extras: bool) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    inputs = ["build.in", *(["tools.in"] if extras else [])]
    if extras:
        texts += [req for group in project["optional-dependencies"].values() for req in group]
    for name in inputs:
        texts += [line for line in (LOCKS / name).read_text().splitlines() if line and not line.startswith("#")]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize("name", ["dev", "server"])
def test_the_lock_was_made_from_the_current_pyproject(name: str) -> None:
    header = next(line for line in (LOCKS / f"{name}.lock").read_text().splitlines()
                  if line.startswith(lockdigest["HEADER"]))
    assert header == lockdigest["HEADER"] + lockdigest["digest"](ROOT), (
        f"requirements/{name}.lock is older than pyproject.toml's dependencies: run ./dev lock")


@pytest.mark.parametrize(("name", "extras"), [("dev", True), ("server", False)])
def test_every_requirement_is_pinned_with_hashes(name: str, extras: bool) -> None:
    locked = pins(LOCKS / f"{name}.lock")
    for req in requirements(extras):
        versions = locked.get(canonicalize_name(req.name))
        assert versions, f"{req.name} ({req}) is not in requirements/{name}.lock: run ./dev lock"
        for version, hashes in versions:
            assert version in req.specifier, f"{req.name}=={version} in {name}.lock does not satisfy {req}"
            assert hashes, f"{req.name}=={version} in {name}.lock has no hash"


def test_the_server_lock_agrees_with_the_full_one() -> None:
    full = {name: {v for v, _ in versions} for name, versions in pins(LOCKS / "dev.lock").items()}
    for name, versions in pins(LOCKS / "server.lock").items():
        assert {v for v, _ in versions} <= full.get(name, set()), f"{name} differs between the two locks"


def test_build_in_is_pyprojects_build_requirements() -> None:
    # One source for the build backend: ./dev lock writes build.in from pyproject.toml.
    assert (ROOT / "requirements" / "build.in").read_text() == lockdigest["build_in"](ROOT)
