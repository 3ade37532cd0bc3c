"""URLs the server hands out, formatted in one place.

Each takes the configured base (``Config.ssh_base_url`` / ``Config.http_base_url``) so that the
same function serves a process's config and a base read from elsewhere.
"""

from __future__ import annotations

from gitserver.policy.names import GIT_SUFFIX


def pipeline_url(http_base_url: str, pipeline_id: int) -> str:
    """Where the API shows one pipeline (``remote: pipeline 7 queued: <this>``)."""
    return f"{http_base_url.rstrip('/')}/api/v1/pipelines/{pipeline_id}"


def ssh_clone_url(ssh_base_url: str, tenant: str, repo: str) -> str:
    """The read-write SSH URL of a repository: ``ssh://git@host:2222/acme/widgets.git``."""
    return f"{ssh_base_url.rstrip('/')}/{tenant}/{repo}{GIT_SUFFIX}"


def http_clone_url(http_base_url: str, tenant: str, repo: str) -> str:
    """The read-only smart-HTTP URL of a repository: ``http://host:8080/git/acme/widgets.git``."""
    return f"{http_base_url.rstrip('/')}/git/{tenant}/{repo}{GIT_SUFFIX}"


def bundle_url(http_base_url: str, tenant: str, repo: str) -> str:
    """Where the HTTP front serves a repository's bundle: ``http://host:8080/bundles/acme/widgets.bundle``."""
    return f"{http_base_url.rstrip('/')}/bundles/{tenant}/{repo}.bundle"
