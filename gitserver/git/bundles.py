"""Bundle URIs: a prebuilt full bundle per repository, for ``git clone --bundle-uri``
(docs/performance.md, "Clone storms: bundle URIs").

A full clone of a large repository costs the server one ``pack-objects`` over all of history.
With ``git clone --bundle-uri=<bundle_url> <clone url>`` (git 2.38 and later) the client first
downloads ``<data>/bundles/<tenant>/<repo>.bundle`` as a plain file (served by the HTTP front
with sendfile, gitserver.api.bundles), then fetches only what is newer than the bundle's
branches over SSH or smart HTTP.

The bundle carries ``refs/heads/*`` and ``refs/tags/*`` and has no prerequisites, so it can be
unbundled into an empty repository. git 2.39 turns only its branches into ``refs/bundles/*``
and sends those as ``have`` lines: the tags' objects are in the bundle, but only what the
branches reach saves pack-objects work. History is never rewritten in gitserver, so a bundle
never holds an object the repository lost, however old it is: an old bundle costs the client a
larger fetch, never a wrong clone.

The bundle is written under a temporary name in its directory and renamed over the old one: a
download that started before keeps reading the old file (its inode), and a failed or killed
write leaves the old bundle in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from pathlib import Path

from gitserver.git.store import GIT, git_env
from gitserver.policy.names import validate_name

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".bundle"
# What a full bundle carries: every branch and tag (rev-list options of `git bundle create`).
BUNDLE_REFS = ("--branches", "--tags")
REF_NAMESPACES = ("refs/heads", "refs/tags")
TMP_PREFIX = ".tmp-"


class BundleError(Exception):
    """``git bundle create`` failed or timed out; the previous bundle, if any, is unchanged."""


def bundle_path(bundles_dir: Path, tenant: str, repo: str) -> Path:
    """``<bundles_dir>/<tenant>/<repo>.bundle``; both names are validated (no ``..``, no ``/``)."""
    validate_name(tenant, "tenant")
    validate_name(repo, "repository")
    return bundles_dir / tenant / f"{repo}{BUNDLE_SUFFIX}"


def published_url(bundles_dir: Path, http_base_url: str, tenant: str, repo: str) -> str | None:
    """A repository's ``bundle_url`` (the API's and the SSH commands' field): where the HTTP
    front serves its bundle, once one was written; None before."""
    from gitserver.net.urls import bundle_url

    if not bundle_path(bundles_dir, tenant, repo).is_file():
        return None
    return bundle_url(http_base_url, tenant, repo)


def has_refs(repo_path: Path) -> bool:
    """Whether the repository has a branch or a tag (git refuses to write an empty bundle)."""
    out = subprocess.run([GIT, "--git-dir", str(repo_path), "for-each-ref", "--count=1",
                          "--format=%(refname)", *REF_NAMESPACES],
                         capture_output=True, env=git_env(), check=False, timeout=60)
    return out.returncode == 0 and bool(out.stdout.strip())


def write_bundle(repo_path: Path, dest: Path, timeout: float) -> bool:
    """Write the repository's full bundle to ``dest`` (atomically); False when the repository
    has no branch or tag yet. Raises :class:`BundleError` when git fails."""
    if not has_refs(repo_path):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{BUNDLE_SUFFIX}"
    argv = [GIT, "--git-dir", str(repo_path), "bundle", "create", "-q", str(tmp), *BUNDLE_REFS]
    try:
        try:
            child = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=git_env(), timeout=timeout,
                                   check=False)
        except subprocess.TimeoutExpired:
            raise BundleError(f"git bundle create timed out after {timeout:.0f} s") from None
        if child.returncode != 0:
            lines = child.stderr.decode("utf-8", "replace").strip().splitlines()
            raise BundleError("git bundle create failed: "
                              + (lines[-1] if lines else f"exit status {child.returncode}"))
        with open(tmp, "rb") as fh:  # on disk before it is renamed into place
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
