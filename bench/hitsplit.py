"""``python -m bench.hitsplit [ROUNDS] [--perf N]``: where a pack-cache hit's server CPU goes.

docs/performance.md ("Clone storms: where a hit's CPU goes") has the figures this printed.
Starts both servers as the bench does (the full profile's small and medium repositories, the
tiny profile's large one, which is not used), primes gitserver's pack cache with one shallow
clone of the medium repository's last tag, then alternates the servers for ROUNDS rounds of: that
shallow clone (a hit on gitserver), ``ls-remote`` of the small and the medium repository, and a
clone of the small one. Each line gives the SSH tree's CPU and its split between the daemon's own
utime+stime and the cutime+cstime of the children it reaped (10 ms ticks).

With ``--perf N``, ``perf record -a`` samples N more hit clones per server; the samples of the
daemon's descendants (found through perf's fork events) are summed by command name: the daemon,
upload-pack, ``cat``, the hook script's processes, pack-objects.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.__main__ import PROFILES, Bench, hold_run_lock
from bench.repos import last_tag
from bench.servers import CLK_TCK, Server, own_cpu, tree, tree_cpu
from bench.workload import rmtree

log = logging.getLogger(__name__)
PERF_HZ = 2999
FORK = re.compile(r"PERF_RECORD_FORK\((\d+):\d+\):\((\d+):\d+\)")


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` has reaped (cutime+cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def measure(server: Server, action: Callable[[], bool]) -> dict[str, float]:
    root, daemon = server.accounting_root, server.daemon_pid
    settled = len(tree(root))
    before = (tree_cpu(root), own_cpu(daemon), reaped_cpu(daemon))
    start = time.perf_counter()
    ok = action()
    wall = time.perf_counter() - start
    deadline = time.monotonic() + 5
    while len(tree(root)) > settled and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"ok": float(ok), "wall": wall, "tree": tree_cpu(root) - before[0],
            "daemon": own_cpu(daemon) - before[1], "children": reaped_cpu(daemon) - before[2]}


def by_command(data: Path, root: int) -> collections.Counter[str]:
    """perf samples of ``root``'s descendants, by command name."""
    script = subprocess.run(["perf", "script", "-i", str(data), "--show-task-events", "-F", "comm,pid"],
                            capture_output=True, text=True, check=True).stdout
    tree_pids, counts = {root}, collections.Counter[str]()
    for line in script.splitlines():
        if (fork := FORK.search(line)) is not None:
            if int(fork.group(2)) in tree_pids:
                tree_pids.add(int(fork.group(1)))
        elif ("PERF_RECORD" not in line and len(parts := line.split()) >= 2 and parts[1].isdigit()
              and int(parts[1]) in tree_pids):
            counts[parts[0]] += 1
    return counts


class Split:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.shallow = ("clone", "-q", "--bare", "--depth", "1", "--branch", last_tag(bench.p.medium))

    def hit(self, server: Server, tag: str) -> dict[str, float]:
        dest = self.bench.scratch(f"hit-{server.name}-{tag}")
        sample = measure(server, lambda: self.bench.run_git(*self.shallow, server.url("medium"), str(dest)))
        rmtree(dest)
        return sample

    def small_clone(self, server: Server, tag: str) -> dict[str, float]:
        dest = self.bench.scratch(f"small-{server.name}-{tag}")
        sample = measure(server, lambda: self.bench.run_git("clone", "-q", "--bare", server.url("small"), str(dest)))
        rmtree(dest)
        return sample

    def rounds(self, n: int) -> None:
        ops: dict[str, Callable[[Server, str], dict[str, float]]] = {
            "hit clone": self.hit, "small clone": self.small_clone,
            "ls-remote small": lambda s, _t: measure(s, lambda: self.bench.run_git("ls-remote", s.url("small"))),
            "ls-remote medium": lambda s, _t: measure(s, lambda: self.bench.run_git("ls-remote", s.url("medium")))}
        for server in self.bench.servers:
            self.hit(server, "prime")
        samples: dict[tuple[str, str], list[dict[str, float]]] = {}
        for i in range(n):
            for server in self.bench.servers[:: 1 if i % 2 == 0 else -1]:
                for name, op in ops.items():
                    samples.setdefault((server.name, name), []).append(op(server, str(i)))
        for (server_name, name), got in sorted(samples.items()):
            mean = {k: sum(s[k] for s in got) / len(got) for k in ("wall", "tree", "daemon", "children")}
            failed = sum(not s["ok"] for s in got)
            print(f"{server_name:10s} {name:17s} n={len(got)} failed={failed} wall {mean['wall']:.3f} s  "
                  f"tree {mean['tree']:.4f} s  daemon {mean['daemon']:.4f} s  children {mean['children']:.4f} s")

    def perf(self, n: int) -> None:
        for server in self.bench.servers:
            data = self.bench.work / f"perf-{server.name}.data"
            recorder = subprocess.Popen(["perf", "record", "-a", "-F", str(PERF_HZ), "-o", str(data)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # perf has started sampling
            for i in range(n):
                self.hit(server, f"perf-{i}")
            recorder.send_signal(2)
            recorder.wait()
            counts = by_command(data, server.accounting_root)
            print(f"{server.name}: per hit clone, by command (perf, {PERF_HZ} Hz)")
            for comm, samples in counts.most_common(12):
                print(f"  {comm:16s} {samples / PERF_HZ / n:.4f} s")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hitsplit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", type=int, nargs="?", default=6)
    parser.add_argument("--perf", type=int, default=0, metavar="N", help="perf-sample N hit clones per server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    profile = dataclasses.replace(PROFILES["full"], large=PROFILES["tiny"].large)
    hold_run_lock()
    work = Path(tempfile.mkdtemp(prefix="gitserver-hitsplit-"))
    bench = Bench(profile, work, Path.home() / ".cache" / "gitserver-bench")
    try:
        bench.setup()
        bench.warm_up()
        log.info("negotiated: %s", bench.extra["negotiated"])
        split = Split(bench)
        split.rounds(args.rounds)
        if args.perf:
            split.perf(args.perf)
    finally:
        bench.stop()
        rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
