"""The repository stands alone: its documents link only to files it has, and nothing points
to a design document outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "var", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache",
             ".mypy_cache", "results"}
TEXT_SUFFIXES = {".md", ".py", ".toml", ".sh", ".example", ".service", ".ini", ".cfg", ""}
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOCS_REFERENCE = re.compile(r"\bdocs/[\w.-]+\.md\b")
# Spelled in two pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "shared/" + "DESIGN")


def text_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 1_000_000:
            found.append(path)
    return found


FILES = text_files()
MARKDOWN = sorted(p for p in FILES if p.suffix == ".md")


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = [target for target in MARKDOWN_LINK.findall(path.read_text(errors="replace"))
              if "://" not in target and not target.startswith("mailto:")
              and not (path.parent / target).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_docs_named_in_the_code_exist() -> None:
    missing = sorted({f"{path.relative_to(ROOT)}: {ref}" for path in FILES
                      for ref in DOCS_REFERENCE.findall(path.read_text(errors="replace"))
                      if not (ROOT / ref).exists()})
    assert not missing, missing


def test_nothing_points_outside_the_repository() -> None:
    outside = sorted(str(path.relative_to(ROOT)) for path in FILES
                     if any(needle in path.read_text(errors="replace") for needle in OUTSIDE))
    assert not outside, outside
