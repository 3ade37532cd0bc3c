"""The service account's bearer token for callbacks and Bifrost uploads (OIDC client
credentials), cached per process until shortly before it expires."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gitserver.config import Config
from gitserver.observe import metrics

log = logging.getLogger(__name__)

@dataclasses.dataclass
class _CachedToken:
    value: str
    expires: float


class ServiceTokens:
    """Bearer tokens of the service account, from the client-credentials grant, cached until
    shortly before they expire. One instance per process (see :func:`service_token_headers`)."""

    # Renew this long before expiry, so a token never expires in flight.
    MARGIN = 30.0

    def __init__(self, post: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._clock = clock
        self._cache: dict[tuple[str, str], _CachedToken] = {}
        self._lock = threading.Lock()

    def token(self, token_url: str, client_id: str, secret: str, timeout: float = 10.0) -> str:
        key = (token_url, client_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expires - self.MARGIN > self._clock():
                return cached.value
            value, lifetime = self._fetch(token_url, client_id, secret, timeout)
            self._cache[key] = _CachedToken(value, self._clock() + lifetime)
            return value

    def _fetch(self, token_url: str, client_id: str, secret: str, timeout: float) -> tuple[str, float]:
        post = self._post
        if post is None:
            import requests

            post = requests.post
        resp = post(token_url, data={"grant_type": "client_credentials", "client_id": client_id,
                                     "client_secret": secret}, timeout=timeout)
        if resp.status_code != 200:
            raise RuntimeError(f"the token endpoint answered {resp.status_code}")
        data = resp.json()
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RuntimeError("the token endpoint's answer has no access_token")
        lifetime = data.get("expires_in", 300)
        return token, float(lifetime) if isinstance(lifetime, (int, float)) else 300.0


# Per-process cache: tokens are process state, not configuration (the configuration comes in
# with each call). Worker threads share it under its lock.
_SERVICE_TOKENS = ServiceTokens()


def service_token_headers(config: Config, tokens: ServiceTokens | None = None) -> dict[str, str]:
    """``Authorization: Bearer …`` for callbacks when an OIDC token endpoint is configured."""
    if not (config.oidc_token_url and config.oidc_client_id):
        return {}
    tokens = tokens or _SERVICE_TOKENS
    try:
        token = tokens.token(config.oidc_token_url, config.oidc_client_id,
                             config.oidc_service_account_secret)
    except Exception as exc:  # noqa: BLE001  (the callback still goes out; the receiver decides)
        log.warning("could not obtain a service account token for callbacks: %s", exc)
        metrics.callback_failed("token")
        return {}
    return {"Authorization": f"Bearer {token}"}
