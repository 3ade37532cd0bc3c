"""The digest of everything the locks are computed from, written into each lock's header;
and ``build.in``, written from pyproject's ``[build-system] requires`` (``--build-in``), so the
build backend has one source.

``./dev lock`` writes it; ``tests/unit/test_lock.py`` recomputes it, so a change to the
dependencies in pyproject.toml (or to the ``*.in`` files here) without a new lock fails the
suite. Only the inputs of the resolution count: editing pyproject's prose or tool settings
does not call for a new lock.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("build.in", "tools.in")
HEADER = "# inputs-sha256: "
BUILD_IN_NOTE = ("# The build backend of pyproject.toml, installed from the lock so that installing gitserver\n"
                 "# itself (pip --no-build-isolation) downloads nothing unlocked. Written by ./dev lock from\n"
                 "# pyproject.toml's [build-system] requires: edit it there.\n")


def build_in(root: Path = ROOT) -> str:
    """The text of ``build.in``: pyproject's build requirements, one per line."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    return BUILD_IN_NOTE + "".join(f"{req}\n" for req in project.get("build-system", {}).get("requires", []))


def digest(root: Path = ROOT) -> str:
    project = tomllib.loads((root / "pyproject.toml").read_text())
    inputs = {
        "requires-python": project["project"].get("requires-python"),
        "dependencies": project["project"].get("dependencies", []),
        "optional-dependencies": project["project"].get("optional-dependencies", {}),
        "build-system": project.get("build-system", {}).get("requires", []),
        **{name: (root / "requirements" / name).read_text() for name in INPUTS},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    if sys.argv[1:] == ["--build-in"]:
        (ROOT / "requirements" / "build.in").write_text(build_in())
    else:
        sys.stdout.write(HEADER + digest() + "\n")
