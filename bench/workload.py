"""The measurements: each one runs the real git client (through the real OpenSSH client)
against both servers, alternating which goes first run by run."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import resource
import shutil
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.servers import GitServer, Sampler, Server, own_cpu, tree, tree_cpu

log = logging.getLogger(__name__)
# What gitserver negotiates by default, forced on the client against both servers, so that a
# row shows the daemons' own cost apart from OpenSSH's default choice (sntrup761x25519 +
# chacha20-poly1305).
MATCHED_KEX = "curve25519-sha256"
MATCHED_CIPHER = "aes128-gcm@openssh.com"
MATCHED_CRYPTO = (f"KexAlgorithms={MATCHED_KEX}", f"Ciphers={MATCHED_CIPHER}")


@dataclasses.dataclass
class Sample:
    seconds: float
    ok: bool = True
    cpu: float = 0.0  # server CPU seconds
    rss: int = 0  # server peak RSS, bytes
    daemon_cpu: float = 0.0  # the part of ``cpu`` spent in the SSH daemon process itself
    daemon_rss: int = 0  # peak RSS of the SSH daemon process itself, bytes
    private_rss: int = 0  # peak private memory of the tree (RSS less file-backed pages), bytes
    failures: int = 0


@dataclasses.dataclass
class Client:
    """The git client: one pinned HOME and one key for both servers, the same ssh options."""

    home: Path
    key: Path
    ssh_options: tuple[str, ...] = ()  # e.g. a forced key exchange and cipher

    def matched(self) -> Client:
        """The same client, forced to one key exchange and cipher whatever the server prefers."""
        return dataclasses.replace(self, ssh_options=MATCHED_CRYPTO)

    def env(self) -> dict[str, str]:
        ssh = ["ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=60",
               *(arg for opt in self.ssh_options for arg in ("-o", opt))]
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C",
                "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": " ".join(ssh),
                "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
                "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["git", *args], cwd=cwd, env=self.env(), text=True, capture_output=True,
                                timeout=900)
        if check and result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def ssh_argv(self) -> list[str]:
        return self.env()["GIT_SSH_COMMAND"].split()

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["git", *args], env=self.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)


def negotiated(client: Client, server: Server, repo_path: str) -> str:
    """The key exchange and cipher the OpenSSH client negotiates with ``server`` by default."""
    argv = [*client.ssh_argv(), "-v", "-p", str(server.port), f"{server.user}@127.0.0.1",
            f"git-upload-pack '{repo_path}'"]
    result = subprocess.run(argv, env=client.env(), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    kex = cipher = "?"
    for line in result.stderr.splitlines():
        if "kex: algorithm:" in line:
            kex = line.split("kex: algorithm:", 1)[1].strip()
        elif "kex: server->client cipher:" in line:
            cipher = line.split("cipher:", 1)[1].split()[0]
    return f"{kex}, {cipher}"


def _settle(root: int, baseline: int, timeout: float = 5.0) -> None:
    """Wait until the server's per-connection processes have exited and been reaped, so
    their CPU time has reached the parent's cutime/cstime."""
    deadline = time.monotonic() + timeout
    while len(tree(root)) > baseline and time.monotonic() < deadline:
        time.sleep(0.01)


def measure(server: Server, action: Callable[[], bool], account: bool = False) -> Sample:
    """Time ``action``; with ``account``, also the server's CPU seconds and peak RSS."""
    if not account:
        start = time.perf_counter()
        ok = action()
        return Sample(time.perf_counter() - start, ok)
    root = server.accounting_root
    daemon = server.daemon_pid
    baseline = len(tree(root))
    cpu_before, daemon_before = tree_cpu(root), own_cpu(daemon)
    with Sampler(root, daemon=daemon) as sampler:
        start = time.perf_counter()
        ok = action()
        seconds = time.perf_counter() - start
    _settle(root, baseline)
    return Sample(seconds, ok, cpu=tree_cpu(root) - cpu_before, rss=sampler.peak,
                  daemon_cpu=own_cpu(daemon) - daemon_before, daemon_rss=sampler.daemon_peak,
                  private_rss=sampler.private_peak)


def alternate(servers: Sequence[Server], runs: int,
              one: Callable[[Server, int], Sample]) -> dict[str, list[Sample]]:
    """``runs`` samples per server, the servers' order swapped on every run."""
    out: dict[str, list[Sample]] = {s.name: [] for s in servers}
    for i in range(runs):
        for server in (servers if i % 2 == 0 else list(reversed(servers))):
            out[server.name].append(one(server, i))
    return out


def median(samples: Sequence[Sample], field: str = "seconds") -> float:
    """The median, except for CPU seconds: the kernel counts those in 10 ms ticks, so one
    small operation reads as 0, 10 or 20 ms and only the mean over the runs is meaningful."""
    if field in ("cpu", "daemon_cpu"):
        return statistics.fmean(getattr(s, field) for s in samples)
    return statistics.median(getattr(s, field) for s in samples)


# --- fake keys ---------------------------------------------------------------------------------

def fake_key(i: int) -> tuple[str, str]:
    """A distinct, well-formed ed25519 public key line (nobody holds its private half) and its
    SHA256 fingerprint."""
    point = hashlib.sha256(b"bench-key-%d" % i).digest()
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + point
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} fake{i}", fingerprint


def write_authorized_keys(path: Path, real_key: str, total: int) -> None:
    """``total`` lines, the real key last: sshd scans the file, so this is its worst case."""
    with open(path, "w") as fh:
        for i in range(total - 1):
            fh.write(fake_key(i)[0] + "\n")
        fh.write(real_key.strip() + "\n")


def add_fake_keys(server: GitServer, start: int, stop: int) -> None:
    """Insert fake keys ``start``..``stop-1`` with one bulk INSERT per chunk (an owner user
    "filler" is created on first use)."""
    from sqlalchemy import insert, select

    from gitserver.admin import tenants, users
    from gitserver.db import models

    with server.db() as session:
        tenant = tenants.get_tenant(session, "bench")
        filler = session.scalar(select(models.User).where(models.User.tenant_id == tenant.id,
                                                          models.User.name == "filler"))
        if filler is None:
            filler = users.create_user(session, tenant, "filler", "member")
        rows = []
        for i in range(start, stop):
            line, fingerprint = fake_key(i)
            rows.append({"user_id": filler.id, "fingerprint": fingerprint, "key_type": "ssh-ed25519",
                         "key_data": line.rsplit(" ", 1)[0], "bits": 256, "title": f"fake{i}"})
        for chunk in range(0, len(rows), 10_000):
            session.execute(insert(models.PublicKey), rows[chunk:chunk + 10_000])


IMPORT_BATCH = 10_000  # keys per ``gitserver key import`` file


@dataclasses.dataclass
class KeyImportTiming:
    keys: int
    seconds: float  # wall time of ``gitserver key import``
    cpu: float  # its CPU seconds (the whole CLI process, interpreter start included)
    baseline: float  # writing the same lines into a file, what adding keys costs OpenSSH


def import_fake_keys(server: GitServer, directory: Path, start: int, stop: int) -> KeyImportTiming:
    """Register fake keys ``start``..``stop-1`` as user "filler" (made by :func:`add_fake_keys`
    at setup) with ``gitserver key import``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"keys-{start}-{stop}"
    begun = time.perf_counter()
    with open(path, "w") as fh:
        fh.writelines(fake_key(i)[0] + "\n" for i in range(start, stop))
    baseline = time.perf_counter() - begun
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begun = time.perf_counter()
    out = server.cli("key", "import", "bench", "filler", str(path))
    seconds = time.perf_counter() - begun
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log.info("gitserver key import of %d keys: %.2f s wall, %.2f s CPU (%s)", stop - start, seconds, cpu,
             out.strip())
    path.unlink()
    return KeyImportTiming(stop - start, seconds, cpu, baseline)


def wait_pipelines_idle(server: GitServer, timeout: float = 300.0) -> None:
    """Wait until the worker has no queued or running job, so that archive pipelines started by
    a push do not steal CPU from the next measurement."""
    from sqlalchemy import func, select

    from gitserver.db import models

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.db() as session:
            busy = session.scalar(select(func.count()).select_from(models.Job)
                                  .where(models.Job.status.in_((models.QUEUED, models.RUNNING))))
        if not busy:
            return
        time.sleep(0.2)
    log.warning("pipelines still busy after %.0fs; measuring anyway", timeout)


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
