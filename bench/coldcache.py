"""What a cold pack cache costs (``--only coldcache``): the first clone of a coordinate with the
pack cache on, against the same clone with it off, and OpenSSH + git for the ratio
(docs/performance.md, "Clone storms: what a cold cache costs").

A second gitserver SSH daemon runs on the same data dir and database with
``GITSERVER_PACK_CACHE_MAX_BYTES=0`` (the cache off: upload-pack runs ``pack-objects`` itself),
under its own subreaper, so the two gitserver figures come from the same repositories, keys and
page cache, and differ only by the cache. Each pair of clones is on, off and OpenSSH, the order
reversed on every pair; before every clone the cache's entries are removed (untimed), so each
"on" clone is a miss: its hook script hashes the request, finds no pack, and the Python side runs
``pack-objects``, sends its pack and writes it to the cache. The directory itself stays, as it
does on a server that has served fetches before. A clone whose miss is not in the cache's
counters is a failed run.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.repos import last_tag
from bench.servers import REPO_ROOT, TENANT, GitServer, Server, free_port, reaped, wait_for_ssh
from bench.workload import Sample, alternate, measure, rmtree

if TYPE_CHECKING:
    from bench.__main__ import Bench

log = logging.getLogger("bench.coldcache")
PAIRS = 6
TINY_PAIRS = 1
# The cost the issue allows a miss over a clone without the cache (issue 27).
ALLOWED = 1.05
ENTRY_SUFFIXES = (".pack", ".part", ".lock")


class UncachedDaemon(Server):
    """gitserver's SSH daemon with the pack cache off, beside the bench's own (same data dir)."""

    def __init__(self, gs: GitServer) -> None:
        super().__init__(name="gitserver, cache off", port=free_port(), user="git")
        self.gs = gs

    def start(self) -> None:
        env = self.gs.ssh_env() | {"GITSERVER_SSH_PORT": str(self.port), "GITSERVER_PACK_CACHE_MAX_BYTES": "0"}
        with open(self.gs.root / "ssh-nocache.log", "ab") as out:
            self.proc = subprocess.Popen(reaped([sys.executable, "-m", "gitserver", "ssh"]), env=env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
        wait_for_ssh(self.port, self.proc, "gitserver ssh (pack cache off)")

    def url(self, repo: str) -> str:
        return f"ssh://git@127.0.0.1:{self.port}/{TENANT}/{repo}.git"


def empty_entries(cache_dir: Path) -> None:
    """Remove every entry of the cache, keeping the directory and its counters."""
    if cache_dir.is_dir():
        for path in cache_dir.iterdir():
            if path.suffix in ENTRY_SUFFIXES:
                path.unlink(missing_ok=True)


def run(bench: Bench) -> None:
    from gitserver.git import packcache

    gs = bench.gs
    cache_dir = gs.data_dir / "cache" / "packs"
    off = UncachedDaemon(gs)
    off.start()
    try:
        pairs = TINY_PAIRS if bench.p.name == "tiny" else PAIRS
        tag = last_tag(bench.p.medium)
        clones = [("shallow clone by tag, medium", "medium", ("--depth", "1", "--branch", tag)),
                  ("full clone, medium", "medium", ()),
                  ("full clone, large", "large", ())]
        for what, repo, opts in clones:
            res = _pairs(bench, [gs, off, bench.ossh], pairs, repo, opts, cache_dir, packcache.counter)
            _report(bench, what, res, gs.name, off.name)
    finally:
        off.stop()


def _pairs(bench: Bench, servers: list[Server], pairs: int, repo: str, opts: tuple[str, ...],
           cache_dir: Path, counter: object) -> dict[str, list[Sample]]:
    assert callable(counter)

    def one(server: Server, i: int) -> Sample:
        empty_entries(cache_dir)
        misses = counter(cache_dir, "misses")
        dest = bench.scratch(f"coldcache-{server.port}-{repo}-{i}")
        sample = measure(server, lambda: bench.run_git("clone", "-q", "--bare", *opts, server.url(repo), str(dest)),
                         account=True)
        missed = counter(cache_dir, "misses") - misses
        if missed != (1 if server is bench.gs else 0):
            log.warning("%s: %d pack cache misses counted for one clone of %s", server.name, missed, repo)
            sample.ok = False
        rmtree(dest)
        return sample

    return alternate(servers, pairs, one)


def _paired(on: list[Sample], off: list[Sample], field: str) -> float:
    """The median over the pairs of on ÷ off: each pair ran back to back, under the same load."""
    return statistics.median(getattr(a, field) / getattr(b, field) for a, b in zip(on, off, strict=True)
                             if getattr(b, field))


def _report(bench: Bench, what: str, res: dict[str, list[Sample]], on: str, off: str) -> None:
    n = len(res[on])
    for name, label in ((on, "cache on, a miss"), (off, "cache off")):
        pair = {"gitserver": res[name], "openssh": res["openssh"]}
        bench.add(f"{what}, {label} (wall)", "s", pair, note=f"{n} pairs")
        bench.add(f"server CPU, {what}, {label}", "s", pair, field="cpu", note=f"{n} pairs")
    for field, label in (("seconds", "wall"), ("cpu", "server CPU")):
        paired = _paired(res[on], res[off], field)
        mean_on = statistics.fmean(getattr(s, field) for s in res[on])
        mean_off = statistics.fmean(getattr(s, field) for s in res[off])
        failures = sum(not s.ok for samples in res.values() for s in samples)
        bench.rows.append(bench.row_type(
            f"{what}: cache on (miss) ÷ cache off, {label}", "s", mean_on, mean_off, f"paired ≤ {ALLOWED:.2f}",
            paired <= ALLOWED and not failures,
            note=f"columns: cache on, cache off (means); median of the {n} paired ratios {paired:.3f}"
                 + (f"; {failures} failed runs" if failures else "")))
        log.info("%-42s cache on %8.3f  off %8.3f  paired ratio %.3f", f"{what} ({label})", mean_on, mean_off,
                 paired)
        bench.extra.setdefault("coldcache", {})[f"{what}, {label}"] = {  # type: ignore[index]
            "on": [getattr(s, field) for s in res[on]], "off": [getattr(s, field) for s in res[off]],
            "openssh": [getattr(s, field) for s in res["openssh"]], "paired_ratio": round(paired, 4)}
