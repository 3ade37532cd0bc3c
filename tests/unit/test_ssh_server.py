"""The SSH daemon's authentication object, without sockets (pure asyncssh callbacks)."""

from __future__ import annotations

import asyncio
import types

import asyncssh

from gitserver.identity.krl import RevocationFile
from gitserver.ssh import server
from gitserver.ssh.certlogin import Trust


class _Daemon:
    def __init__(self) -> None:
        self.lookups = 0
        self.trust = Trust({}, RevocationFile(""))  # no CA, no revocation file

    def lookup(self, fingerprint: str) -> None:
        self.lookups += 1
        return None


class _Conn:
    def __init__(self) -> None:
        self.disconnected: list[int] = []

    def disconnect(self, code: int, reason: str) -> None:
        self.disconnected.append(code)


def test_unknown_key_probes_per_connection_are_capped() -> None:
    """Without credentials, one connection could offer keys without end during the login grace
    time, each costing a database lookup; past the cap the connection is dropped."""
    daemon, conn = _Daemon(), _Conn()
    auth = server.GitSSHServer(daemon)  # type: ignore[arg-type]
    auth.conn = conn  # type: ignore[assignment]

    async def probe_many() -> list[bool]:
        return [await auth.validate_public_key("git", types.SimpleNamespace(public_data=b"key%d" % i))  # type: ignore[arg-type]
                for i in range(server.MAX_UNKNOWN_KEYS + 50)]

    answers = asyncio.run(probe_many())
    assert not any(answers)
    assert daemon.lookups == server.MAX_UNKNOWN_KEYS
    assert conn.disconnected and conn.disconnected[0] == asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE
