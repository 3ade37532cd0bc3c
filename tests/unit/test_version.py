"""The installed version and the build's commit stamp."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

import gitserver
from gitserver.observe import version

ROOT = Path(__file__).resolve().parents[2]
SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = SHA1 + "89abcdef0123456789abcdef"


@pytest.mark.parametrize(("text", "expected"), [
    (SHA1 + "\n", SHA1),
    (SHA256, SHA256),
    ("$Format:%H$\n", None),           # a checkout: git archive did not expand it
    ("", None),
    (SHA1[:-1], None),                 # truncated
    (SHA1.upper(), None),              # git prints lower case; anything else is not its output
    (SHA1 + "\nrm -rf /", None),       # one id and nothing else
    (SHA1 + "0", None),
])
def test_parse_commit(text: str, expected: str | None) -> None:
    assert version.parse_commit(text) == expected


def test_version_comes_from_the_package_metadata() -> None:
    # pyproject.toml takes the version from gitserver.__version__; the metadata must agree.
    assert version.version() == gitserver.__version__



@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout to make an archive from")
def test_git_archive_stamps_the_commit() -> None:
    # The VM release is `git archive`; export-subst (.gitattributes) expands BUILD_COMMIT.
    archive = subprocess.run(["git", "archive", "HEAD", "gitserver/BUILD_COMMIT"], cwd=ROOT, capture_output=True,
                             check=True, timeout=30).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("gitserver/BUILD_COMMIT")
        assert member is not None
        stamped = member.read().decode()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert version.parse_commit(stamped) == head
