"""The clone-storm scenarios (``--only clone_storms``): a build farm's clones of one tag, and a
full clone through a bundle URI, against OpenSSH + git in the same run (docs/performance.md,
"Clone storms").

gitserver's pack cache is emptied before each scenario, so that its first clone pays for the one
``pack-objects`` run, as after a release tag lands. For the bundle clone gitserver's figure adds
the CPU of its HTTP API process tree (which sends the bundle) to the SSH daemon's tree.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from bench.repos import last_tag
from bench.servers import TENANT, USER, GitServer, Server, tree_cpu
from bench.workload import Sample, alternate, measure, rmtree

if TYPE_CHECKING:
    from bench.__main__ import Bench

STORM = 16
SEQUENTIAL = 20
# The tiny profile (the smoke test's, which has 80 s for every group) runs fewer clones.
TINY = {"storm": 4, "sequential": 5}


def clear_pack_cache(server: Server) -> None:
    if isinstance(server, GitServer):
        shutil.rmtree(server.data_dir / "cache" / "packs", ignore_errors=True)


def run(bench: Bench) -> None:
    assert bench.client is not None
    tag = last_tag(bench.p.medium)
    shallow = ("clone", "-q", "--bare", "--depth", "1", "--branch", tag)
    tiny = bench.p.name == "tiny"
    storm(bench, shallow, TINY["storm"] if tiny else STORM)
    sequential(bench, shallow, TINY["sequential"] if tiny else SEQUENTIAL)
    cold(bench, shallow)
    bundle_clone(bench)


def storm(bench: Bench, shallow: tuple[str, ...], n: int) -> None:
    client = bench.client
    assert client is not None

    def one(server: Server, i: int) -> Sample:
        clear_pack_cache(server)
        dests = [bench.scratch(f"storm-{server.name}-{i}-{k}") for k in range(n)]

        def clones() -> bool:
            procs = [client.popen(*shallow, server.url("medium"), str(d)) for d in dests]
            return all(proc.wait() == 0 for proc in procs)

        sample = measure(server, clones, account=True)
        for d in dests:
            rmtree(d)
        return sample

    res = alternate(bench.servers, bench.p.concurrency_runs, one)
    note = f"{n} × --depth 1 --branch <tag>, pack cache emptied first"
    bench.add(f"{n} concurrent shallow clones of one tag, medium (wall)", "s", res, "ratio ≤ 1.0",
              lambda r: r.ratio <= 1.0, note=note)
    bench.add(f"server CPU, {n} concurrent shallow clones of one tag", "s", res, "ratio ≤ 0.35",
              lambda r: r.ratio <= 0.35, field="cpu", note=note)


def sequential(bench: Bench, shallow: tuple[str, ...], n: int) -> None:
    def one(server: Server, i: int) -> Sample:
        if i == 0:
            clear_pack_cache(server)
        dest = bench.scratch(f"seq-{server.name}-{i}")
        sample = measure(server, lambda: bench.run_git(*shallow, server.url("medium"), str(dest)), account=True)
        rmtree(dest)
        return sample

    # Not alternated: each server's 20 clones in a row, as one builder after another.
    res = {s.name: [one(s, i) for i in range(n)] for s in bench.servers}
    bench.add(f"server CPU per clone, {n} sequential shallow clones of one tag", "s", res,
              "ratio ≤ 0.35", lambda r: r.ratio <= 0.35, field="cpu",
              note="the first one fills gitserver's pack cache")


def cold(bench: Bench, shallow: tuple[str, ...]) -> None:
    def one(server: Server, i: int) -> Sample:
        clear_pack_cache(server)
        dest = bench.scratch(f"cold-{server.name}-{i}")
        sample = measure(server, lambda: bench.run_git(*shallow, server.url("medium"), str(dest)), account=True)
        rmtree(dest)
        return sample

    res = alternate(bench.servers, bench.p.clone_runs, one)
    note = "a miss: pack-objects runs and its pack is written to the cache"
    bench.add("shallow clone by tag, cold pack cache, medium", "s", res, note=note)
    bench.add("server CPU, shallow clone by tag, cold pack cache", "s", res, field="cpu", note=note)


def bundle_clone(bench: Bench) -> None:
    """gitserver: ``clone --bundle-uri`` with the bundle maintenance wrote; OpenSSH: a plain
    full clone (it has no bundles)."""
    gs = bench.gs
    gs.cli("maintain", f"{TENANT}/large")
    url = f"{gs.http_url}/bundles/{TENANT}/large.bundle"
    with_token = url.replace("http://", f"http://x:{_token(gs)}@")
    api = gs.others[-1].pid

    def one(server: Server, i: int) -> Sample:
        dest = bench.scratch(f"bundle-{server.name}-{i}")
        opts = (f"--bundle-uri={with_token}",) if server is gs else ()
        api_before = tree_cpu(api) if server is gs else 0.0
        sample = measure(server, lambda: bench.run_git("clone", "-q", "--bare", *opts, server.url("large"),
                                                    str(dest)), account=True)
        if server is gs:
            time.sleep(0.2)  # let gunicorn's worker account the sendfile it finished
            sample.cpu += tree_cpu(api) - api_before
        if server is gs and not (dest / "refs" / "bundles").is_dir():
            sample.ok = False
        rmtree(dest)
        return sample

    res = alternate(bench.servers, bench.p.large_runs, one)
    note = "gitserver: --bundle-uri (its CPU: SSH tree + the HTTP API's tree); OpenSSH: plain clone"
    bench.add("full clone with --bundle-uri, large repo", "s", res, "ratio ≤ 1.0",
              lambda r: r.ratio <= 1.0, note=note)
    bench.add("server CPU, full clone with --bundle-uri, large repo", "s", res, "ratio ≤ 0.25",
              lambda r: r.ratio <= 0.25, field="cpu", note=note)


def _token(gs: GitServer) -> str:
    from gitserver.admin import tenants as admin_tenants
    from gitserver.admin import tokens as admin_tokens
    from gitserver.admin import users as admin_users

    with gs.db() as session:
        user = admin_users.get_user(session, admin_tenants.get_tenant(session, TENANT), USER)
        _row, token = admin_tokens.create_token(session, user=user, name="bench-bundles")
    return str(token)

