"""URLs the server hands out, formatted in one place."""

from __future__ import annotations


def pipeline_url(http_base_url: str, pipeline_id: int) -> str:
    """Where the API shows one pipeline (``remote: pipeline 7 queued: <this>``)."""
    return f"{http_base_url.rstrip('/')}/api/v1/pipelines/{pipeline_id}"
