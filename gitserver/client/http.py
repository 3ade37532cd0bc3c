"""The remote transport: the REST API of a server at a URL, with a bearer token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import requests

from gitserver.client.errors import ClientError
from gitserver.client.transport import Reply

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 120.0)  # connect, read: a listing of a big tenant may take a while
USER_AGENT = "gitserver-cli"


def normalise_url(url: str) -> str:
    """The server's base URL as credentials are stored under it: no trailing slash, and an
    error for anything but http(s) (a typo must not send a token somewhere odd)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ClientError(f"--url must be an http:// or https:// URL, not {url!r}")
    return url


class RemoteApi:
    """Requests to ``base_url`` with ``Authorization: Bearer token`` (none when token is None)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = normalise_url(base_url)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, *, body: Any = None,
                params: Mapping[str, str] | None = None) -> Reply:
        url = self.base_url + path
        try:
            resp = self.session.request(method, url, json=body, params=params, timeout=TIMEOUT,
                                        allow_redirects=False)
        except requests.RequestException as exc:
            # One line naming the server, never requests' chained repr of the socket error.
            reason = type(exc).__name__.replace("Error", " error").strip()
            raise ClientError(f"cannot reach {self.base_url}: {reason}", status=503) from exc
        log.debug("%s %s -> %s", method, url, resp.status_code)
        headers = {name.lower(): value for name, value in resp.headers.items()}
        return Reply(resp.status_code, headers, resp.text)

    def close(self) -> None:
        self.session.close()
