"""``python -m bench [--quick|--tiny]``: gitserver against plain OpenSSH sshd + git.

Starts both servers on free loopback ports, serves the same generated repositories to the
same key, runs every measurement alternating the servers, and writes
``bench/results/latest.{md,json,png}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import backup, certs, coldcache, report, storms
from bench.repos import RepoSpec, generate, install_into, last_tag, size_bytes
from bench.servers import (
    ASYNCSSH_PATCH,
    REPO_ROOT,
    SSHD,
    TENANT,
    USER,
    GitServer,
    OpenSSHServer,
    Profiler,
    Server,
    patched_asyncssh,
    top_frames,
)
from bench.workload import (
    IMPORT_BATCH,
    MATCHED_CIPHER,
    MATCHED_KEX,
    Client,
    KeyImportTiming,
    Sample,
    add_fake_keys,
    alternate,
    import_fake_keys,
    measure,
    median,
    negotiated,
    rmtree,
    wait_pipelines_idle,
    write_authorized_keys,
)

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    small: RepoSpec
    medium: RepoSpec
    large: RepoSpec
    runs: int  # for the quick operations (ls-remote, small push, auth)
    clone_runs: int  # medium clone, shallow clone, medium push
    large_runs: int
    concurrency: tuple[int, ...]
    concurrency_runs: int
    many_keys: int


SMALL = RepoSpec("small", commits=1)
PROFILES = {
    "full": Profile("full", SMALL,
                    RepoSpec("medium", commits=2000, text_files=5000, text_file_bytes=10_000,
                             files_per_commit=3, tag_every=500),
                    RepoSpec("large", commits=6, blob_files=60, blob_bytes=5_000_000),
                    runs=10, clone_runs=5, large_runs=3, concurrency=(8, 32), concurrency_runs=1,
                    many_keys=100_000),
    "quick": Profile("quick", SMALL,
                     RepoSpec("medium", commits=200, text_files=500, text_file_bytes=8_000,
                              files_per_commit=3, tag_every=50),
                     RepoSpec("large", commits=4, blob_files=8, blob_bytes=2_500_000),
                     runs=5, clone_runs=3, large_runs=2, concurrency=(8, 32), concurrency_runs=1,
                     many_keys=100_000),
    "tiny": Profile("tiny", SMALL,
                    RepoSpec("medium", commits=20, text_files=40, text_file_bytes=2_000,
                             files_per_commit=2, tag_every=10),
                    RepoSpec("large", commits=2, blob_files=2, blob_bytes=200_000),
                    runs=1, clone_runs=1, large_runs=1, concurrency=(4,), concurrency_runs=1,
                    many_keys=1_000),
}
FEW_KEYS = 10
# The measurement groups, in the order a run makes them (``--only`` picks some).
GROUPS = ("ls_remote", "clones", "pushes", "concurrent", "clone_storms", "coldcache", "auth_scaling", "certificates",
          "backup_restore")


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    metric: str
    unit: str
    gitserver: float
    openssh: float
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.gitserver / self.openssh if self.openssh else float("nan")


class Bench:
    row_type = Row  # for scenario modules' rows that are not gitserver against OpenSSH
    def __init__(self, profile: Profile, work: Path, cache: Path, py_spy: Path | None = None,
                 asyncssh_patch: Path | None = None) -> None:
        self.p = profile
        self.py_spy = py_spy
        self.profiler: Profiler | None = None
        self.work = work
        self.cache = cache
        self.extra: dict[str, object] = {}
        asyncssh_path = None
        if asyncssh_patch is not None:
            asyncssh_path = patched_asyncssh(asyncssh_patch, work / "asyncssh-patched")
            self.extra["asyncssh_patch"] = patch_banner(asyncssh_patch)
        self.gs = GitServer(work / "gitserver", asyncssh_path)
        self.ossh = OpenSSHServer(work / "openssh", self.gs.data_dir)
        self.servers: list[Server] = [self.gs, self.ossh]
        self.rows: list[Row] = []
        self.client: Client | None = None
        self.repos: dict[str, Path] = {}

    # --- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        for spec in (self.p.small, self.p.medium, self.p.large):
            started = time.monotonic()
            self.repos[spec.name] = generate(spec, self.cache)
            log.info("repository %s: %.1f MB (%.1fs)", spec.name, size_bytes(self.repos[spec.name]) / 1e6,
                     time.monotonic() - started)
        home = self.work / "client"
        home.mkdir(parents=True)
        key = home / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)], check=True)
        self.client = Client(home=home, key=key)
        self.public_key = key.with_suffix(".pub").read_text().strip()
        self.gs.root.mkdir(parents=True)
        self.gs.start()
        self.ossh.start()
        self._create_repos()
        write_authorized_keys(self.ossh.authorized_keys, self.public_key, FEW_KEYS)
        add_fake_keys(self.gs, 0, FEW_KEYS - 1)
        self.ossh.hand_over([self.ossh.repo_path(name) for name in ("small", "medium", "large")])
        self.extra["baseline_login"] = self.ossh.login_note

    def _create_repos(self) -> None:
        from gitserver.admin import grants, keys, repos, tenants, users

        pushes = [f"push-medium-{i}" for i in range(self.p.clone_runs)]
        with self.gs.db() as session:
            tenant = tenants.create_tenant(session, TENANT)
            user = users.create_user(session, tenant, USER, "member")
            keys.add_user_key(session, user, self.public_key, "bench")
            for name in ("small", "medium", "large", "push-small", *pushes):
                repo = repos.create_repo(session, self.gs.runtime.store, tenant, name)
                grants.set_grant(session, repo, "write", user=user)
        for name in ("small", "medium", "large"):
            install_into(self.repos[name], self.gs.repo_path(name))
        install_into(self.repos["small"], self.gs.repo_path("push-small"))
        self._record_installed(("small", "medium", "large", "push-small"))
        for name in ("push-small", *pushes):
            plain = self.ossh.plain_repo(name)
            subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(plain)], check=True)
        install_into(self.repos["small"], self.ossh.plain_repo("push-small"))

    def _record_installed(self, names: tuple[str, ...]) -> None:
        """Record the refs installed by copying as pushes, as a push would have (every ref on
        disk is in the ledger; a backup holds only recorded refs), and let their archive
        pipelines finish before anything is measured."""
        from gitserver.admin import repos, tenants
        from gitserver.git.refs import ZERO_OID
        from gitserver.push.ledger import PushContext, record_push

        for name in names:
            listing = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)"],
                                     cwd=self.gs.repo_path(name), capture_output=True, text=True, check=True)
            pairs = (line.split(" ", 1) for line in listing.stdout.splitlines())
            updates = [(ZERO_OID, oid, ref) for oid, ref in pairs]
            with self.gs.db() as session:
                repo = repos.get_repo(session, tenants.get_tenant(session, TENANT), name)
                record_push(session, PushContext(repo_id=repo.id, protocol="bench-install"), updates)
        wait_pipelines_idle(self.gs)

    # --- helpers -----------------------------------------------------------------------------

    def _run(self, *args: str, cwd: Path | None = None, client: Client | None = None) -> bool:
        client = client or self.client
        assert client is not None
        result = client.git(*args, cwd=cwd, check=False)
        if result.returncode != 0:
            log.warning("git %s failed: %s", " ".join(args[:2]), result.stderr.strip()[-300:])
        return result.returncode == 0

    def _scratch(self, tag: str) -> Path:
        path = self.work / "scratch" / tag
        rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # What scenario modules (bench/storms.py) call.
    scratch = _scratch
    run_git = _run

    def add(self, metric: str, unit: str, results: dict[str, list[Sample]], target: str = "",
            check: object = None, field: str = "seconds", scale: float = 1.0, note: str = "") -> Row:
        row = Row(metric, unit, median(results["gitserver"], field) * scale,
                  median(results["openssh"], field) * scale, target, note=note)
        failures = sum(not s.ok for samples in results.values() for s in samples)
        if failures:
            row.note = (row.note + f" {failures} failed runs").strip()
        if callable(check):
            row.passed = bool(check(row)) and not failures
        self.rows.append(row)
        log.info("%-42s gitserver %8.3f  openssh %8.3f  ratio %.2f %s", metric, row.gitserver, row.openssh,
                 row.ratio, "" if row.passed is None else ("ok" if row.passed else "MISSED"))
        return row

    # --- measurements ------------------------------------------------------------------------

    def warm_up(self) -> None:
        assert self.client is not None
        for server in self.servers:
            if not self._run("ls-remote", server.url("small")):
                where = getattr(server, "root", "its work directory")
                raise RuntimeError(f"{server.name}: ls-remote of the small repository fails; see {where}")
        self.extra["negotiated"] = {
            "gitserver": negotiated(self.client, self.gs, f"{TENANT}/small"),
            "openssh": negotiated(self.client, self.ossh, str(self.ossh.repo_path("small")))}

    def ls_remote(self) -> None:
        assert self.client is not None
        res = alternate(self.servers, self.p.runs,
                        lambda s, _i: measure(s, lambda: self._run("ls-remote", s.url("small")), account=True))
        self.add("ls-remote, small repo", "s", res, "ratio ≤ 1.0", lambda r: r.ratio <= 1.0)
        self.add("server CPU per ls-remote", "s", res, field="cpu")
        matched = self.client.matched()
        res = alternate(self.servers, self.p.runs,
                        lambda s, _i: measure(s, lambda: self._run("ls-remote", s.url("small"), client=matched),
                                              account=True))
        crypto = f"{MATCHED_KEX} + {MATCHED_CIPHER.split('@')[0]} on both"
        self.add("ls-remote, small repo, matched crypto", "s", res, note=crypto)
        self.add("server CPU per ls-remote, matched crypto", "s", res, field="cpu", note=crypto)

    def clones(self) -> None:
        assert self.client is not None

        def clone(repo: str, *opts: str, client: Client = self.client) -> object:
            def one(server: Server, i: int) -> Sample:
                dest = self._scratch(f"{server.name}-{repo}-{i}")
                sample = measure(server, lambda: self._run("clone", "-q", "--bare", *opts,
                                                           server.url(repo), str(dest), client=client),
                                 account=True)
                rmtree(dest)
                return sample
            return one

        med = alternate(self.servers, self.p.clone_runs, clone("medium"))  # type: ignore[arg-type]
        self.add("full clone, medium repo", "s", med, "ratio ≤ 1.10", lambda r: r.ratio <= 1.10)
        self.add("server CPU per clone, medium repo", "s", med, field="cpu")
        self.add("server peak RSS during clone, medium", "MB", med, "≤ 100 MB",
                 lambda r: r.gitserver <= 100, field="rss", scale=1e-6, note="whole SSH process tree")
        self.add("… of which the daemon process itself", "MB", med, field="daemon_rss", scale=1e-6,
                 note="gitserver: the asyncssh daemon; sshd: the listener only")
        self.add("… the tree's private memory", "MB", med, field="private_rss", scale=1e-6,
                 note="RSS less file-backed pages: without git's mapped pack and shared libraries")
        large = alternate(self.servers, self.p.large_runs, clone("large"))  # type: ignore[arg-type]
        self.add("full clone, large repo", "s", large, "ratio ≤ 1.10", lambda r: r.ratio <= 1.10)
        self.add("server CPU per clone, large repo", "s", large, field="cpu")
        self.add("server peak RSS during clone, large", "MB", large, field="rss", scale=1e-6,
                 note="whole SSH process tree, git's mapped pack included")
        matched = alternate(self.servers, self.p.large_runs,
                            clone("large", client=self.client.matched()))  # type: ignore[arg-type]
        crypto = f"client forced to {MATCHED_KEX} + {MATCHED_CIPHER.split('@')[0]} on both"
        self.add("full clone, large repo, matched crypto", "s", matched, note=crypto)
        self.add("server CPU per clone, large repo, matched crypto", "s", matched, "ratio ≤ 1.25",
                 lambda r: r.ratio <= 1.25, field="cpu", note=crypto)
        self.add("… of which in the daemon process itself", "s", matched, field="daemon_cpu",
                 note="gitserver: SSH and the copy loop; sshd: the listener only")
        tag = last_tag(self.p.medium)
        shallow = alternate(self.servers, self.p.clone_runs,
                            clone("medium", "--depth", "1", "--branch", tag))  # type: ignore[arg-type]
        self.add(f"shallow clone by tag ({tag}), medium", "s", shallow, "ratio ≤ 1.10",
                 lambda r: r.ratio <= 1.10)

    def pushes(self) -> None:
        source = self.repos["medium"]

        def push_medium(server: Server, i: int) -> Sample:
            sample = measure(server, lambda: self._run("push", "-q", server.push_url(f"push-medium-{i}"),
                                                       "refs/heads/main", "refs/tags/*", cwd=source),
                             account=True)
            if server is self.gs:
                wait_pipelines_idle(self.gs)
            return sample

        res = alternate(self.servers, self.p.clone_runs, push_medium)
        self.add("push medium repo into an empty repo", "s", res, "ratio ≤ 1.15", lambda r: r.ratio <= 1.15)

        workdirs = {}
        for server in self.servers:
            workdirs[server.name] = wd = self._scratch(f"push-small-{server.name}")
            self._run("clone", "-q", server.push_url("push-small"), str(wd))

        def push_small(server: Server, i: int) -> Sample:
            wd = workdirs[server.name]
            (wd / f"change-{i}.txt").write_text(f"change {i}\n")
            self._run("add", ".", cwd=wd)
            self._run("commit", "-q", "-m", f"change {i}", cwd=wd)
            sample = measure(server, lambda: self._run("push", "-q", "origin", "HEAD:main", cwd=wd),
                             account=True)
            if server is self.gs:
                wait_pipelines_idle(self.gs)
            return sample

        res = alternate(self.servers, self.p.runs, push_small)
        self.add("push of one small commit", "s", res, "≤ +0.100 s",
                 lambda r: r.gitserver - r.openssh <= 0.100, note="gitserver runs its hooks")
        self.add("server CPU per small push", "s", res, "ratio ≤ 2.0", lambda r: r.ratio <= 2.0,
                 field="cpu", note="pipeline worker not counted")
        self.add("… of which in the daemon process itself", "s", res, field="daemon_cpu",
                 note="gitserver: SSH, auth, recording the push; sshd: the listener only")

    def concurrent(self) -> None:
        assert self.client is not None
        client = self.client
        for n in self.p.concurrency:
            def one(server: Server, i: int, n: int = n) -> Sample:
                dests = [self._scratch(f"conc-{server.name}-{n}-{i}-{k}") for k in range(n)]
                start = time.perf_counter()
                procs = [client.popen("clone", "-q", "--bare", server.url("medium"), str(d)) for d in dests]
                codes = []
                for proc in procs:
                    _out, err = proc.communicate()
                    codes.append(proc.returncode)
                    if proc.returncode:
                        log.warning("%s: concurrent clone failed: %s", server.name, err.decode()[-300:])
                seconds = time.perf_counter() - start
                for d in dests:
                    rmtree(d)
                failures = sum(1 for c in codes if c)
                return Sample(seconds, ok=True, failures=failures)

            res = alternate(self.servers, self.p.concurrency_runs, one)
            fails = {name: sum(s.failures for s in samples) for name, samples in res.items()}
            row = self.add(f"{n} concurrent clones, medium (wall)", "s", res, "ratio ≤ 1.2, 0 failures",
                           lambda r, f=fails: r.ratio <= 1.2 and f["gitserver"] == 0,
                           note=f"failures: gitserver {fails['gitserver']}, openssh {fails['openssh']}")
            self.extra[f"concurrent_{n}_failures"] = fails
            del row

    def clone_storms(self) -> None:
        storms.run(self)  # bench/storms.py: the pack cache and bundle URIs against OpenSSH

    def coldcache(self) -> None:
        coldcache.run(self)  # bench/coldcache.py: a first clone with the pack cache on, off, and OpenSSH

    def certificates(self) -> None:
        certs.run(self)  # bench/certs.py: a certificate login against a plain key's, on gitserver

    def auth_scaling(self) -> None:
        """ls-remote with 10 registered keys, then with more and more: sshd scans its
        authorized_keys file (the real key is last), gitserver looks the key up in SQL. The
        keys reach gitserver through ``gitserver key import``, in files of at most
        :data:`IMPORT_BATCH` keys, each import timed (wall and CPU)."""
        def ls(server: Server, _i: int) -> Sample:
            return measure(server, lambda: self._run("ls-remote", server.url("small")))

        steps = [n for n in (FEW_KEYS, 1_000, 10_000, 100_000) if n <= self.p.many_keys]
        times: dict[int, dict[str, list[Sample]]] = {}
        imports: list[KeyImportTiming] = []
        registered = FEW_KEYS
        for n in steps:
            if n > registered:
                for start in range(registered - 1, n - 1, IMPORT_BATCH):
                    imports.append(import_fake_keys(self.gs, self.work / "keys", start,
                                                    min(start + IMPORT_BATCH, n - 1)))
                write_authorized_keys(self.ossh.authorized_keys, self.public_key, n)
                registered = n
            times[n] = alternate(self.servers, self.p.runs, ls)
            self.add(f"auth + ls-remote, {n:,} keys", "s", times[n])
        few, many = times[steps[0]], times[steps[-1]]
        keys = f"{steps[-1]:,}"
        gs_growth = median(many["gitserver"]) / median(few["gitserver"])
        ossh_growth = median(many["openssh"]) / median(few["openssh"])
        self.rows.append(Row(f"auth time growth, {keys} vs {FEW_KEYS} keys", "×", gs_growth, ossh_growth,
                             "gitserver ≤ 1.10", gs_growth <= 1.10,
                             note="ratio column: gitserver growth / openssh growth"))
        log.info("auth growth with %s keys: gitserver %.2f, openssh %.2f", keys, gs_growth, ossh_growth)
        full = [t for t in imports if t.keys == IMPORT_BATCH] or imports
        if full:
            size = f"{full[0].keys:,}"
            wall = statistics.median(t.seconds for t in full)
            cpu = statistics.median(t.cpu for t in full)
            written = statistics.median(t.baseline for t in full)
            self.rows.append(Row(f"gitserver key import of {size} keys (wall)", "s", wall, float("nan"),
                                 "≤ 2 s", wall <= 2.0,
                                 note=f"{len(full)} imports; writing the lines for sshd takes {written:.3f} s"))
            self.rows.append(Row(f"gitserver key import of {size} keys (CPU of the CLI process)", "s",
                                 cpu, float("nan"), "≤ 2 s", cpu <= 2.0,
                                 note="includes the CLI's start, ~0.5 s"))
            self.extra["key_imports"] = [dataclasses.asdict(t) for t in imports]

    def backup_restore(self) -> None:
        """Last, as it reads everything the other measurements wrote."""
        wait_pipelines_idle(self.gs)
        out = self._scratch("backup")
        out.mkdir()
        ours = backup.gitserver_backup(self.gs, out / "gitserver.backup")
        base = backup.baseline_backup(self.gs.data_dir, out)
        restored = backup.gitserver_restore(out / "gitserver.backup", out / "restored")
        base_restored = backup.baseline_restore(out, out / "baseline-restored")
        note = "baseline: tar of the data dir + sqlite3 .backup (server stopped)"
        for metric, unit, mine, theirs in (
                ("backup (online), all repositories", "s", ours.seconds, base.seconds),
                ("backup size", "MB", ours.bytes / 1e6, base.bytes / 1e6),
                ("restore into an empty data dir", "s", restored.seconds, base_restored.seconds)):
            self.rows.append(Row(metric, unit, mine, theirs, note=note))
            log.info("%-42s gitserver %8.3f  baseline %8.3f  ratio %.2f", metric, mine, theirs,
                     mine / theirs if theirs else float("nan"))

    def run(self, only: Sequence[str] = ()) -> None:
        self.setup()
        if self.py_spy:
            self.py_spy.mkdir(parents=True, exist_ok=True)
            self.profiler = Profiler(self.gs.daemon_pid, self.py_spy / "gitserver-ssh.txt")
        self.warm_up()
        for name in GROUPS:
            if not only or name in only:
                getattr(self, name)()

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            if self.profiler.out.exists():
                summary = top_frames(self.profiler.out)
                (self.profiler.out.with_suffix(".top.txt")).write_text(summary)
                log.info("py-spy profile of the gitserver SSH daemon:\n%s", summary)
        for server in self.servers:
            server.stop()


def patch_banner(patch: Path) -> str:
    """What a report says first when gitserver's daemon ran on a patched asyncssh."""
    from importlib.metadata import version

    shown = patch.relative_to(REPO_ROOT) if patch.is_relative_to(REPO_ROOT) else patch
    return (f"NOT THE SHIPPED DAEMON: gitserver's SSH daemon ran on asyncssh {version('asyncssh')} "
            f"with {shown} applied (bench --asyncssh-patch); the OpenSSH baseline is unchanged.")


def mark_patched(paths: dict[str, Path], banner: str) -> None:
    """Put ``banner`` at the top of the markdown a run wrote, so that its table cannot be
    mistaken for the shipped daemon's (the JSON has it as ``meta.asyncssh_patch``)."""
    for key in ("md", "readme"):
        if key in paths:
            text = paths[key].read_text()
            paths[key].write_text(f"**{banner}**\n\n{text}")


RUN_LOCK = Path(tempfile.gettempdir()) / "gitserver-bench.lock"


def hold_run_lock() -> None:
    """One bench run at a time on a machine: every run points the shared baseline account
    (``gitbench``) at its own home and repositories, so a second run would break the first's
    OpenSSH side ("dubious ownership"), and two runs would disturb each other's figures anyway.
    A later run waits; the lock goes with the process."""
    import fcntl

    handle = open(RUN_LOCK, "a")  # noqa: SIM115  (held until the process exits)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another bench run is going on (%s); waiting for it to finish", RUN_LOCK)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _held_locks.append(handle)


_held_locks: list[object] = []


def gitserver_ssh_available() -> bool:
    """Whether ``gitserver serve`` can start its SSH daemon at all."""
    import importlib.util

    return importlib.util.find_spec("gitserver.ssh.server") is not None


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help="smaller repositories and fewer runs (< 3 minutes)")
    size.add_argument("--tiny", action="store_const", dest="profile", const="tiny",
                      help="the smallest end-to-end run (the smoke test uses it)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "gitserver-bench",
                        help="where generated repositories are kept between runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where results are written")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="sample the gitserver SSH daemon with py-spy for the whole run; write "
                             "collapsed stacks and a summary of the hottest frames into DIR")
    parser.add_argument("--only", action="append", choices=GROUPS, default=[],
                        help="run only this group of measurements (repeatable)")
    parser.add_argument("--asyncssh-patch", nargs="?", type=Path, const=ASYNCSSH_PATCH, metavar="PATCH",
                        help="run gitserver's SSH daemon (only it) on a copy of the installed asyncssh "
                             "with PATCH applied (default: docs/upstream/asyncssh-send-path.patch); "
                             "the report says so in its first line; not with --publish")
    parser.add_argument("--runs", type=int, help="override the profile's number of quick runs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    parser.add_argument("--publish", action="store_true",
                        help="also copy the results into bench/published/ as latest.* and as "
                             "<date>-<profile>.*, next to the earlier ones (the history)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not SSHD.exists():
        print(f"bench: {SSHD} is missing; install it with `apt-get install openssh-server`", file=sys.stderr)
        return 2
    if not gitserver_ssh_available():
        print("bench: gitserver has no SSH daemon yet (gitserver/ssh/server.py is missing)", file=sys.stderr)
        return 2
    if args.asyncssh_patch and args.publish:
        print("bench: --asyncssh-patch measures a daemon gitserver does not ship; its results are not "
              "published (drop --publish)", file=sys.stderr)
        return 2
    profile = PROFILES[args.profile or "full"]
    if args.runs:
        profile = dataclasses.replace(profile, runs=args.runs)
    hold_run_lock()
    # A SIGTERM (the smoke test's timeout, a CI cancel) unwinds like an error, so that the
    # `finally` below stops the servers.
    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="gitserver-bench-"))
    try:
        bench = Bench(profile, work, args.cache_dir, args.py_spy, args.asyncssh_patch)
    except RuntimeError as exc:
        rmtree(work)
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        bench.run(args.only)
    finally:
        bench.stop()
        if not args.keep:
            rmtree(work)
        else:
            log.info("work directory kept: %s", work)
    elapsed = time.monotonic() - started
    meta = report.machine() | {"profile": profile.name, "elapsed_s": round(elapsed, 1),
                               "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "repos_mb": {k: round(size_bytes(v) / 1e6, 1) for k, v in bench.repos.items()},
                               "loadavg": [load_start, os.getloadavg()[0]]}
    meta.update(bench.extra)
    paths = report.write(args.out, bench.rows, meta)
    if args.asyncssh_patch:
        mark_patched(paths, str(bench.extra["asyncssh_patch"]))
    if args.publish:
        paths |= report.publish(paths, HERE / "published", meta)
    print(paths["md"].read_text())
    print(f"bench: {profile.name} run took {elapsed:.0f}s; wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
