"""``python -m bench.verify [--entries N] [--runs R] [--profile]``: what ``gitserver verify``
costs on a repository whose reference log has N entries (default 10,000; the issue's budget is
3 s for that).

Builds, in a throwaway directory, a bare repository with N commits on ``main`` (git
fast-import), a signing key as ``gitserver init`` makes it, and the log and notes a server
would have written for N pushes of one commit each: one log entry per push (through
:func:`gitserver.provenance.reflog.append`, the writers' own code) and its two attestations in
``refs/notes/attestations`` (the envelopes of :mod:`gitserver.provenance.attest`, stored by
fast-import in one notes commit, since writing 10,000 notes one commit each only costs the
build), packed as maintenance packs it. Then runs ``gitserver verify file://… --keys allowed_signers`` R times as a real
process and prints its wall and CPU time (the process and its children: the mirror clone's git
included), and the in-process time of the checks alone (:func:`gitserver.provenance.audit.audit`
over the mirror). ``--profile`` prints cProfile's top entries of one in-process run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from gitserver.provenance import attest, dsse, keys, reflog, trust, verify
from gitserver.provenance import signer as signing
from gitserver.provenance.entry import NOTES_REF, Entry

BRANCH = "refs/heads/main"
PUSHER = "bench"
FINGERPRINT = "SHA256:bench"
REPO_URI = "https://gs.example/git/bench/verify.git"
VERIFIER = "https://gs.example"
GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def fast_import(repo: Path, stream: str) -> None:
    subprocess.run(["git", "--git-dir", str(repo), "fast-import", "--quiet"], input=stream.encode(),
                   check=True, env={**GIT_ENV, "HOME": str(repo.parent)})


def commits(repo: Path, count: int) -> list[str]:
    """``count`` commits on main, one file changed in each; their ids, oldest first."""
    parts = []
    for i in range(count):
        body = f"{i}\n"
        parts.append(f"commit {BRANCH}\nmark :{i + 1}\ncommitter b <b@x> {1_600_000_000 + i} +0000\n"
                     f"data 2\nc\nM 100644 inline f.txt\ndata {len(body)}\n{body}\n")
    fast_import(repo, "".join(parts))
    out = subprocess.run(["git", "--git-dir", str(repo), "rev-list", "--reverse", BRANCH],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def notes(repo: Path, key: signing.Signer, logged: list[reflog.Logged]) -> None:
    """Each logged push's provenance and VSA, as the note of its commit (one notes commit)."""
    since = logged[0].entry.time
    parts = [f"commit {NOTES_REF}\ncommitter gitserver <gitserver@localhost> 1600000000 +0000\ndata 5\nnotes\n"]
    for item in logged:
        subject = attest.Subject(item.entry.new, None if item.entry.old.startswith("0" * 40) else item.entry.old)
        lines = "".join(json.dumps(dsse.envelope(key, s), separators=(",", ":")) + "\n"
                        for s in attest.statements(item.entry, item.commit, subject, since, REPO_URI, VERIFIER))
        data = lines.encode()
        parts.append(f"N inline {item.entry.new}\ndata {len(data)}\n{lines}")
    fast_import(repo, "".join(parts) + "\n")


def build(work: Path, count: int) -> tuple[Path, Path]:
    """The repository and its allowed-signers file."""
    repo = work / "verify.git"
    pygit2.init_repository(str(repo), bare=True)
    signing_dir = work / "signing"
    keys.ensure_key(signing_dir)
    key = signing.load(signing_dir)
    allowed = work / "allowed_signers"
    allowed.write_text(keys.allowed_signers(keys.read_history(signing_dir)))
    time.sleep(1)  # log entries dated after the key's first second, as on a server
    ids = commits(repo, count)
    entries = [Entry(BRANCH, "0" * 40, new, push_id=n + 1, pusher=PUSHER, key_fingerprint=FINGERPRINT,
                     protocol="ssh") for n, new in enumerate(ids)]
    logged = reflog.append(repo, key, entries)
    notes(repo, key, logged)
    # Packed, as the server's maintenance keeps a repository (gitserver.git.maintain): a clone
    # of 30,000 loose objects would time zlib, not verify.
    subprocess.run(["git", "--git-dir", str(repo), "repack", "-a", "-d", "-q"], check=True, env=GIT_ENV)
    return repo, allowed


def run_cli(repo: Path, allowed: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the process and its children) of one ``gitserver verify``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "gitserver", "verify", f"file://{repo}", "--keys", str(allowed)],
                            capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"verify found breaches or failed: {result.stdout[:2000]}{result.stderr[:2000]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_checks(repo: Path, allowed: Path, work: Path, profile: bool) -> float:
    """Seconds of the checks alone, in process, over a mirror made beforehand."""
    mirror = work / "mirror.git"
    if not mirror.exists():
        verify.mirror(f"file://{repo}", mirror)
    trusted = trust.parse_allowed_signers(allowed.read_text())
    clone = pygit2.Repository(str(mirror))
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    breaches, _reading = verify.audit.audit(clone, trusted, verify.served_refs(clone))
    if profiler:
        profiler.disable()
    took = time.perf_counter() - t0
    if breaches:
        raise RuntimeError(f"breaches: {breaches[:5]}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitserver-bench-verify-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        repo, allowed = build(work, args.entries)
        print(f"built {args.entries} log entries in {time.perf_counter() - t0:.1f} s")
        cli = [run_cli(repo, allowed) for _ in range(args.runs)]
        checks = [run_checks(repo, allowed, work, False) for _ in range(args.runs)]
        if args.profile:
            run_checks(repo, allowed, work, True)
        load = os.getloadavg()[0]
        print(f"| `gitserver verify` of {args.entries} log entries | median of {args.runs} | min |")
        print("|---|---:|---:|")
        print(f"| wall (mirror clone + checks) | {statistics.median(w for w, _ in cli):.2f} s | "
              f"{min(w for w, _ in cli):.2f} s |")
        print(f"| CPU, the process and its children | {statistics.median(c for _, c in cli):.2f} s | "
              f"{min(c for _, c in cli):.2f} s |")
        print(f"| the checks alone, in process | {statistics.median(checks):.2f} s | {min(checks):.2f} s |")
        print(f"load average {load:.1f}")


if __name__ == "__main__":
    main()
