"""``python -m bench.reconcile [--repos N]``: what one pass of the ref reconciler costs.

Builds N repositories (one commit each, recorded in the ledger as a done push) under a
throwaway data dir on SQLite, then times passes of :func:`gitserver.push.reconcile.reconcile_all`:

* cold: no fingerprint stored yet, every repository's refs are read and compared;
* warm: nothing changed, each repository costs a fingerprint (a few ``stat`` calls) and a compare;
* 1% changed: a ref written straight into 1% of the repositories (outside any push), which the
  pass records as recovered pushes with their pipelines.

There is no OpenSSH counterpart to this work, so the figures are absolute, from this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from gitserver import config as config_mod
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.push import reconcile
from gitserver.runtime import Runtime, initialise

TENANT = "bench"


def build(runtime: Runtime, count: int, work: Path) -> str:
    """``count`` repositories, each a copy of one template holding one commit on main."""
    template = work / "template.git"
    env = {"GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x", "HOME": str(work), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(template)], check=True, env=env)
    tree = subprocess.run(["git", "--git-dir", str(template), "mktree"], input="", text=True,
                          capture_output=True, check=True, env=env).stdout.strip()
    commit = subprocess.run(["git", "--git-dir", str(template), "commit-tree", tree, "-m", "x"],
                            capture_output=True, text=True, check=True, env=env).stdout.strip()
    subprocess.run(["git", "--git-dir", str(template), "update-ref", "refs/heads/main", commit],
                   check=True, env=env)
    with transaction(runtime.sessions) as session:
        tenant = models.Tenant(name=TENANT)
        session.add(tenant)
        session.flush()
        session.execute(insert(models.Repository), [
            {"tenant_id": tenant.id, "name": f"r{i}"} for i in range(count)])
        repo_ids = list(session.scalars(select(models.Repository.id).order_by(models.Repository.id)))
        session.execute(insert(models.Push), [
            {"repo_id": rid, "state": models.PUSH_DONE, "protocol": "ssh"} for rid in repo_ids])
        push_ids = list(session.scalars(select(models.Push.id).order_by(models.Push.id)))
        session.execute(insert(models.RefUpdate), [
            {"push_id": pid, "ref": "refs/heads/main", "old": "0" * 40, "new": commit}
            for pid in push_ids])
    for i in range(count):
        shutil.copytree(template, runtime.store.path(TENANT, f"r{i}"))
    return commit


def timed_pass(runtime: Runtime) -> tuple[float, reconcile.Summary]:
    t0 = time.perf_counter()
    summary = reconcile.reconcile_all(runtime.sessions, runtime.store.root, intent_grace=300)
    return time.perf_counter() - t0, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitserver-bench-reconcile-") as tmp:
        work = Path(tmp)
        cfg = config_mod.load(environ={"GITSERVER_DATA_DIR": str(work / "data")})
        initialise(cfg)
        runtime = Runtime.create(cfg, pool_size=2)
        try:
            t0 = time.perf_counter()
            commit = build(runtime, args.repos, work)
            print(f"built {args.repos} repositories in {time.perf_counter() - t0:.1f} s")
            cold, s1 = timed_pass(runtime)
            warm, s2 = timed_pass(runtime)
            changed = max(1, args.repos // 100)
            past = time.time() - 60  # older than reconcile.FRESH_REF_SECONDS: not a writer mid-way
            for i in range(changed):
                repo = runtime.store.path(TENANT, f"r{i}")
                subprocess.run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/planted", commit],
                               check=True)
                os.utime(repo / "refs" / "heads" / "planted", (past, past))
            dirty, s3 = timed_pass(runtime)
            print("| pass | repositories | read and compared | recovered pushes | seconds | per repository |")
            print("|---|---|---|---|---|---|")
            for name, secs, s in (("cold (no fingerprints yet)", cold, s1),
                                  ("warm (nothing changed)", warm, s2),
                                  (f"{changed} changed (1%)", dirty, s3)):
                print(f"| {name} | {s.repos} | {s.repos - s.skipped} | {s.recovered_pushes} | "
                      f"{secs:.2f} | {secs / s.repos * 1e6:.0f} µs |")
        finally:
            runtime.dispose()


if __name__ == "__main__":
    main()
