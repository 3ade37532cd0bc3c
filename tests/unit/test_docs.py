"""The repository stands alone: its documents link only to files it has, and nothing points
to a design document outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".venv-latest", "var", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache",
             ".mypy_cache", ".cache", "results"}
TEXT_SUFFIXES = {".md", ".py", ".toml", ".sh", ".example", ".service", ".ini", ".cfg", ""}
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
LINK_WITH_FRAGMENT = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
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


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces become hyphens."""
    text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(errors="replace"), flags=re.M | re.S)
    return {anchor(m.group(1)) for m in HEADING.finditer(text)}


def test_anchor_of_a_heading() -> None:
    assert anchor("Five-minute walk-through") == "five-minute-walk-through"
    assert anchor("`gitserver check [--repair]`") == "gitserver-check---repair"
    assert anchor("The push ledger: nothing lands unrecorded") == "the-push-ledger-nothing-lands-unrecorded"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_their_anchors_exist(path: Path) -> None:
    problems = []
    for target, fragment in LINK_WITH_FRAGMENT.findall(path.read_text(errors="replace")):
        if ":" in target or (not target and not fragment):
            continue  # an address (https:, mailto:): not a file of the repository
        linked = (path.parent / target).resolve() if target else path
        if target.startswith("/") or not linked.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif fragment and linked.suffix == ".md" and linked.exists() and fragment not in anchors(linked):
            problems.append(f"{target}#{fragment}: no such heading")
    assert not problems, f"{path.relative_to(ROOT)}: {problems}"


def test_api_examples_agree_on_what_api_means() -> None:
    """The README sets API=http://…/api/v1 and the docs build on it, so `$API/api/…` is a
    path that does not exist, and every `API=` a document sets must mean the same."""
    wrong = sorted(f"{path.relative_to(ROOT)}: {found}" for path in MARKDOWN
                   for found in re.findall(r"\$API/api/\S*|\bAPI=\S+", path.read_text(errors="replace"))
                   if not re.fullmatch(r"API=https?://[^/\s]+/api/v1;?", found))
    assert not wrong, wrong


def test_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 200


def test_docs_named_in_the_code_exist() -> None:
    missing = sorted({f"{path.relative_to(ROOT)}: {ref}" for path in FILES
                      for ref in DOCS_REFERENCE.findall(path.read_text(errors="replace"))
                      if not (ROOT / ref).exists()})
    assert not missing, missing


def test_nothing_points_outside_the_repository() -> None:
    outside = sorted(str(path.relative_to(ROOT)) for path in FILES
                     if any(needle in path.read_text(errors="replace") for needle in OUTSIDE))
    assert not outside, outside
