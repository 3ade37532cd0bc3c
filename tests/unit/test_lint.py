"""ruff and mypy over the code, so that ``./dev test`` (and CI) fails on a new finding.

Their configuration is in pyproject.toml: the rule set, the strict core for mypy, and the
modules whose findings wait for open issues to land. A finding that is right to keep gets a
``noqa`` / ``type: ignore`` with its code and the reason, never a blanket one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "--no-fix", "--output-format", "concise", ".")
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing() -> None:
    # Files, strictness and exclusions come from [tool.mypy] in pyproject.toml.
    result = run("mypy")
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
