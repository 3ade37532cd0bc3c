"""The environment a git child gets from whoever started it, read back by the hooks.

One record, one spelling of every ``GITSERVER_*`` name: the SSH session and Repour's
internal pushes build it (:meth:`HookEnv.to_env`), the proc-receive hook and its database
fallback read it (:meth:`HookEnv.from_env`). It also holds what both of the hook's ways into the ledger
(the socket to that process, and the database fallback in ``hookdb``) raise, so that neither
imports the other; what they say is gitserver.push.messages. Standard library only: the hooks
import it.
A NamedTuple rather than a dataclass: the hook imports this module on every push, and
``dataclasses`` imports ``inspect`` (with ast, dis and tokenize), ~10 ms of CPU per push
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from gitserver.push import limits as push_limits

ENV_HOOK_FD = "GITSERVER_HOOK_FD"  # the socket back to the process that started git
ENV_CONFIG = "GITSERVER_CONFIG"

# PushContext field -> environment variable
CONTEXT_NAMES: Mapping[str, str] = {
    "repo_id": "GITSERVER_REPO_ID", "protocol": "GITSERVER_PUSH_PROTOCOL", "user_id": "GITSERVER_USER_ID",
    "key_id": "GITSERVER_KEY_ID", "key_fingerprint": "GITSERVER_KEY_FINGERPRINT",
    "client_address": "GITSERVER_CLIENT_ADDRESS", "cert_ca_fingerprint": "GITSERVER_CERT_CA",
    "cert_key_id": "GITSERVER_CERT_KEY_ID", "cert_serial": "GITSERVER_CERT_SERIAL",
}
# HookEnv's own fields -> environment variable
ENV_NAMES: Mapping[str, str] = {
    "repo": "GITSERVER_REPO", "permission": "GITSERVER_PERMISSION", "data_dir": "GITSERVER_DATA_DIR",
    "database_url": "GITSERVER_DATABASE_URL", "public_http_url": "GITSERVER_PUBLIC_HTTP_URL",
    "user": "GITSERVER_USER",
    # The server's signing settings (gitserver.config): the hook's database fallback signs the
    # push's log entries with the same key as the process that started git.
    "signing_agent": "GITSERVER_SIGNING_AGENT", "signing_key": "GITSERVER_SIGNING_KEY",
    "config_file": ENV_CONFIG,
}
# Set only when not empty: config.load reads a variable that is set, even empty, over the file.
ABSENT_WHEN_EMPTY = ("config_file", "signing_agent", "signing_key")


class PushContext(NamedTuple):
    """Who pushed, with which key, from where: the audit facts of one push (the ledger
    records them, gitserver.push.ledger)."""

    repo_id: int
    user_id: int | None = None
    key_id: int | None = None
    key_fingerprint: str = ""
    protocol: str = "ssh"  # ssh | repour | internal
    client_address: str = ""
    # Pushed with an SSH certificate: its CA's fingerprint, key id and serial ("" otherwise).
    cert_ca_fingerprint: str = ""
    cert_key_id: str = ""
    cert_serial: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PushContext:
        """ValueError when git was not started by gitserver (no repository id)."""
        values = {field: environ.get(name, "") for field, name in CONTEXT_NAMES.items()}

        def number(field: str) -> int | None:
            return int(values[field]) if values[field].isdigit() else None

        repo_id = number("repo_id")
        if repo_id is None:
            raise ValueError(f"{CONTEXT_NAMES['repo_id']} is not set: git was not started by gitserver")
        return cls(repo_id, user_id=number("user_id"), key_id=number("key_id"),
                   key_fingerprint=values["key_fingerprint"], protocol=values["protocol"] or "internal",
                   client_address=values["client_address"], cert_ca_fingerprint=values["cert_ca_fingerprint"],
                   cert_key_id=values["cert_key_id"], cert_serial=values["cert_serial"])


class HookEnv(NamedTuple):
    """Who pushes where (``ctx``, and the pusher's name), as computed when the session was
    authorised, and where the database is (for the hook's own fallback)."""

    ctx: PushContext
    repo: str  # tenant/name
    permission: str  # read | write | admin
    data_dir: str
    database_url: str
    public_http_url: str
    user: str = ""
    signing_agent: str = ""
    signing_key: str = ""
    config_file: str = ""
    # The size limits and quotas the pre-receive hook holds the push to (their own names:
    # GITSERVER_MAX_BLOB_BYTES, …, see gitserver.push.limits).
    limits: push_limits.PushLimits = push_limits.NO_LIMITS

    def to_env(self) -> dict[str, str]:
        env = {name: "" if getattr(self.ctx, field) is None else str(getattr(self.ctx, field))
               for field, name in CONTEXT_NAMES.items()}
        env.update({name: str(getattr(self, field)) for field, name in ENV_NAMES.items()
                    if getattr(self, field) or field not in ABSENT_WHEN_EMPTY})
        env.update(self.limits.to_env())
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HookEnv:
        """ValueError when git was not started by gitserver (no repository id)."""
        return cls(PushContext.from_env(environ), limits=push_limits.PushLimits.from_env(environ),
                   **{field: environ.get(name, "") for field, name in ENV_NAMES.items()})


def permission(environ: Mapping[str, str]) -> str:
    """The pusher's permission, or "" (the hook refuses every write then)."""
    return environ.get(ENV_NAMES["permission"], "")


# --- what the hook says to the ledger -----------------------------------------------------------

class LedgerError(Exception):
    """The push could not be recorded; the message is safe to show the pusher."""

