"""The seam between a command and a server: one request in, one :class:`Reply` out.

:class:`Transport` is what a command is given; :mod:`.http` sends over the network,
``gitserver.cmd.local_api`` into an API app built in this process on the data dir.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Protocol

JSON_TYPE = "application/json"


@dataclasses.dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (names lower-cased) and body text."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        """The body as JSON; None for an empty or non-JSON body (an error page of a proxy)."""
        if not self.text or not self.headers.get("content-type", "").startswith(JSON_TYPE):
            return None
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Transport(Protocol):
    def request(self, method: str, path: str, *, body: Any = None,
                params: Mapping[str, str] | None = None) -> Reply:
        """Send ``method path`` (``path`` from ``/api/v1``, already quoted) with a JSON body."""
        ...

    def close(self) -> None: ...
