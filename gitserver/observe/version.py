"""What is running: the installed package's version and, when the build recorded it, its commit.

The version has one source, ``gitserver.__version__``, which the build copies into the package
metadata; it is read back from the metadata so an installed wheel reports what pip installed.
The commit is a build-time value: ``gitserver/BUILD_COMMIT`` holds git's ``$Format:%H$``
placeholder, which ``git archive`` replaces with the commit (``export-subst`` in
``.gitattributes``), and which an image build may overwrite (``images/Containerfile``'s
``GITSERVER_COMMIT`` build argument). A plain checkout has no commit to report.
"""

from __future__ import annotations

import re
from importlib import metadata, resources

DISTRIBUTION = "gitserver"
BUILD_COMMIT_FILE = "BUILD_COMMIT"
UNKNOWN_VERSION = "0+unknown"
_COMMIT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def version() -> str:
    """The version pip installed, or ``0+unknown`` for a source tree that was never installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def commit() -> str | None:
    """The commit the package was built from, or None when the build did not record one."""
    try:
        text = resources.files("gitserver").joinpath(BUILD_COMMIT_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return parse_commit(text)


def parse_commit(text: str) -> str | None:
    """The commit id in a BUILD_COMMIT file's text; None for anything else.

    An unexpanded ``$Format:%H$`` (a checkout, not an archive) is no commit, and neither is
    anything but a full SHA-1 or SHA-256 id: the value is shown to API clients as is.
    """
    text = text.strip()
    return text if _COMMIT_ID.fullmatch(text) else None
