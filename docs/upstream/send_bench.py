"""CPU an asyncssh server spends sending a bulk transfer to the OpenSSH client.

    python docs/upstream/send_bench.py [MB] [RUNS]

Starts an asyncssh server on a free loopback port (whatever ``import asyncssh`` finds: put a
patched copy first on PYTHONPATH to measure it), runs ``ssh`` against it RUNS times with
curve25519-sha256 and aes128-gcm@openssh.com, and has the server write MB MiB to the channel in
256 KiB writes with ``drain()`` between them, as a server relaying a subprocess does. Prints
the server process's own CPU time (user and system, from getrusage; ``ssh`` is a child and not
counted) per transfer. Needs only asyncssh and the OpenSSH client; nothing of gitserver.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncssh

CHUNK = 256 * 1024
CIPHER = "aes128-gcm@openssh.com"
KEX = "curve25519-sha256"


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def main(total: int, runs: int) -> None:
    block = os.urandom(CHUNK)

    async def serve(process: asyncssh.SSHServerProcess[bytes]) -> None:
        sent = 0
        while sent < total:
            process.stdout.write(block)
            sent += CHUNK
            await process.stdout.drain()
        process.exit(0)

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
                                       authorized_client_keys=str(key) + ".pub", process_factory=serve,
                                       encoding=None)
        port = server.sockets[0].getsockname()[1]
        print(f"asyncssh {asyncssh.__version__} from {Path(asyncssh.__file__).parent}")
        for _ in range(runs):
            user0, sys0 = cpu()
            proc = await asyncio.create_subprocess_exec(
                "ssh", "-q", "-p", str(port), "-i", str(key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", f"Ciphers={CIPHER}", "-o", f"KexAlgorithms={KEX}",
                "bench@127.0.0.1", "send", stdout=subprocess.DEVNULL)
            if await proc.wait() != 0:
                raise SystemExit(f"ssh exited with {proc.returncode}")
            user1, sys1 = cpu()
            print(f"{total / 2**20:.0f} MiB: server CPU {user1 - user0 + sys1 - sys0:.3f} s "
                  f"(user {user1 - user0:.3f}, system {sys1 - sys0:.3f})", flush=True)
        server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) * 2**20 if len(sys.argv) > 1 else 300 * 2**20,
                     int(sys.argv[2]) if len(sys.argv) > 2 else 3))
