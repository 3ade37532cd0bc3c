"""The change to asyncssh prepared for upstream (docs/upstream/asyncssh-send-path.patch) keeps
applying to the asyncssh we install, and the patched asyncssh still carries a session's bytes
intact. gitserver never runs on it (only ``bench --asyncssh-patch`` does); this test is what
tells us, when asyncssh moves, that the patch needs rebasing before it is offered upstream.

The exchange runs a patched asyncssh server and client in one event loop, in a subprocess (so
the patched copy is imported instead of the installed one), over a connected pair of loopback
TCP sockets: asyncssh needs a peer address, which a socketpair() lacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import ASYNCSSH_PATCH, patched_asyncssh

pytestmark = pytest.mark.skipif(shutil.which("patch") is None,
                                reason="the patch program is not installed (apt-get install patch)")

# 5 MB on stdout spans many 32 KiB packets and more than one 2 MiB window; the stderr part goes
# through the extended-data branch the patch also changed. One connection per cipher family the
# patch touches: AES-GCM, chacha20-poly1305, encrypt-then-MAC, and CBC (whose MSG_IGNORE rule
# the patch narrows).
EXCHANGE = '''
import asyncio
import hashlib
import socket

import asyncssh

OUT = hashlib.shake_256(b"stdout").digest(5_000_000)
ERR = hashlib.shake_256(b"stderr").digest(300_000)
CIPHERS = {"aes128-gcm@openssh.com": [], "chacha20-poly1305@openssh.com": [],
           "aes128-ctr": ["hmac-sha2-256-etm@openssh.com"], "aes256-cbc": ["hmac-sha2-256"]}


async def serve(process):
    process.stdout.write(OUT)
    process.stderr.write(ERR)
    await process.stdout.drain()
    process.exit(0)


def tcp_pair():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


async def exchange(cipher, macs):
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    algs = {"encryption_algs": [cipher], **({"mac_algs": macs} if macs else {})}
    ours, theirs = tcp_pair()
    server = asyncio.ensure_future(asyncssh.run_server(
        ours, server_host_keys=[host_key], authorized_client_keys=authorized,
        process_factory=serve, encoding=None, **algs))
    async with await asyncssh.run_client(theirs, known_hosts=None, client_keys=[client_key],
                                         username="u", **algs) as conn:
        result = await conn.run("send", encoding=None)
    (await server).close()
    assert result.exit_status == 0, (cipher, result.exit_status)
    assert result.stdout == OUT, (cipher, "stdout", len(result.stdout))
    assert result.stderr == ERR, (cipher, "stderr", len(result.stderr))
    print(cipher, "ok")


async def main():
    for cipher, macs in CIPHERS.items():
        await exchange(cipher, macs)
    print("asyncssh from", asyncssh.__file__)
    print("send_batch", hasattr(asyncssh.SSHClientConnection, "send_batch"))

asyncio.run(main())
'''


def test_patch_applies_and_the_patched_asyncssh_carries_every_byte(tmp_path: Path) -> None:
    copy = patched_asyncssh(ASYNCSSH_PATCH, tmp_path / "patched")
    script = tmp_path / "exchange.py"
    script.write_text(EXCHANGE)
    env = {**os.environ, "PYTHONPATH": str(copy)}
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:4] == ["aes128-gcm@openssh.com ok", "chacha20-poly1305@openssh.com ok",
                         "aes128-ctr ok", "aes256-cbc ok"]
    # The patched copy ran, not the installed asyncssh.
    assert lines[4] == f"asyncssh from {copy / 'asyncssh' / '__init__.py'}"
    assert lines[5] == "send_batch True"


def test_a_patch_that_does_not_apply_is_refused_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "broken.patch"
    broken.write_text(ASYNCSSH_PATCH.read_text().replace("-        orig_payload = Byte(pkttype)",
                                                         "-        orig_payload = Nope(pkttype)"))
    with pytest.raises(RuntimeError, match=r"broken\.patch does not apply to the asyncssh installed at"):
        patched_asyncssh(broken, tmp_path / "patched")
