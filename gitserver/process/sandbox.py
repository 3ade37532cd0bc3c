"""Sandboxes for the jobs that run repository or origin code: build steps and alignment tools.

Each job gets (docs/sandbox.md says the same for operators):

* its own UID and GID, leased from ``sandbox_uid_range`` for as long as the job runs, so no two
  running jobs share an identity, and none shares the server's;
* a job directory (the build workspace, the alignment work tree) owned by that UID, mode 0700,
  bound into the sandbox at the same path; everything else it sees is read-only;
* a private ``/tmp``, ``/dev`` and ``/proc``, its own PID, IPC and UTS namespaces: it sees no
  other process, and when its first process ends every process it started dies with it;
* the system directories (``/usr``, ``/etc``, ``/opt``, the ``/bin``/``/lib`` links) read-only,
  plus what the operator lists in ``sandbox_read_only_paths``; never the data dir;
* the network only when asked for (``"host"``); ``"none"`` is a network namespace with only
  loopback up.

It is bubblewrap (``bwrap``), started as root: bwrap creates the namespaces and mounts, keeps
only CAP_SETUID, CAP_SETGID and CAP_SETPCAP, and util-linux ``setpriv`` inside drops to the
job's UID, clears supplementary groups and empties the inheritable and bounding capability
sets before the job's command. bwrap alone cannot do that last part: its ``--uid`` needs a user
namespace, and a user namespace created by root maps the job's UID to host root. setpriv is the
smallest tool that switches to an arbitrary UID without a passwd entry.

Where this cannot be had (the process is not root, bwrap or setpriv is missing, the host or the
container runtime forbids namespaces) a job fails with a message naming what is missing, unless
the operator accepted unisolated jobs (``build_allow_unisolated``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import resource
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gitserver.config import Config
from gitserver.policy.values import MIN_SANDBOX_UID, UidRange, parse_uid_range

log = logging.getLogger(__name__)

# Where the UID leases are: one lock file per UID, held (flock) by the process running the job.
# Host-wide on purpose: every gitserver process on the host (workers, API processes running a
# synchronous /adjust, other installations with the same range) must see the same leases. The
# kernel drops a lease when its process dies, so a crash never leaks a UID.
UID_LOCK_DIR = Path("/run/gitserver/sandbox-uids")
# Looked up here only, never through the job's environment.
TOOL_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# Bound read-only when they are directories; recreated as the same symlink when they are links
# (merged-/usr systems: /bin -> usr/bin).
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Where /etc/resolv.conf points on systemd-resolved hosts (so "host" jobs can resolve names).
RESOLVER_DIRS = ("/run/systemd/resolve",)
NETWORKS = ("host", "none")
# Private, empty and world-writable (sticky) in every sandbox.
PRIVATE_DIRS = ("/tmp", "/var/tmp")
class SandboxUnavailable(Exception):
    """A job cannot be sandboxed here; the message says exactly what is missing."""


# --- the policy of this host ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Policy:
    """How jobs are confined by this process (decided once, from the config and the host)."""

    uid_range: UidRange
    # Never visible inside (masked when they lie under a system directory).
    hidden: tuple[Path, ...]
    # Extra read-only paths from the operator (tools, JDKs, Maven settings).
    read_only: tuple[Path, ...] = ()
    bwrap: str = ""
    setpriv: str = ""
    # "" when jobs can be sandboxed here; otherwise what is missing, for the job's failure.
    problem: str = ""
    allow_unisolated: bool = False
    lock_dir: Path = UID_LOCK_DIR
    max_processes: int = 4096

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        uid_range = parse_uid_range(cfg.sandbox_uid_range)
        hidden = data_dir = spellings(cfg.data_dir)
        if cfg.signing_agent:
            # The signing agent signs for whoever reaches its socket (docs/provenance.md): its
            # directory is masked like the data dir wherever it lies under a shown one.
            hidden += spellings(Path(cfg.signing_agent).absolute().parent)
        read_only = tuple(Path(p).absolute() for p in cfg.sandbox_read_only_paths)
        for path in read_only:
            if any(_overlaps(r, h) for r in spellings(path) for h in hidden):
                raise SandboxUnavailable(f"sandbox_read_only_paths: {path} overlaps the data dir "
                                         f"{data_dir[-1]}, which jobs must never see")
        bwrap = shutil.which("bwrap", path=TOOL_PATH) or ""
        setpriv = shutil.which("setpriv", path=TOOL_PATH) or ""
        return cls(uid_range=uid_range, hidden=hidden, read_only=read_only, bwrap=bwrap,
                   setpriv=setpriv, problem=host_problem(bwrap, setpriv),
                   allow_unisolated=cfg.build_allow_unisolated,
                   max_processes=cfg.sandbox_max_processes)

    @property
    def available(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        if self.available:
            return (f"sandbox: bubblewrap, a UID of its own from {self.uid_range.first}-"
                    f"{self.uid_range.last}, private /tmp and PID namespace, read-only system, "
                    "no data dir")
        if self.allow_unisolated:
            return f"warning: NOT sandboxed ({self.problem}); allowed by build_allow_unisolated"
        return f"not sandboxed: {self.problem}; {UNISOLATED_REFUSAL}"

    def refusal(self) -> str:
        """Why a job is not run ("" when it may run, sandboxed or as the operator allowed)."""
        if self.available or self.allow_unisolated:
            return ""
        return f"the job cannot be sandboxed: {self.problem}; {UNISOLATED_REFUSAL}"

    @contextlib.contextmanager
    def lease(self) -> Iterator[int]:
        """A UID of the range that no other job on this host holds, until the block ends."""
        self.lock_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        start = secrets.randbelow(self.uid_range.count)  # spread processes over the range
        for i in range(self.uid_range.count):
            uid = self.uid_range.first + (start + i) % self.uid_range.count
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield uid
            finally:
                os.close(fd)  # releases the lock
            return
        raise SandboxUnavailable(f"all {self.uid_range.count} UIDs of sandbox_uid_range "
                                 f"({self.uid_range.first}-{self.uid_range.last}) are in use")


UNISOLATED_REFUSAL = ("it was not run: fix that, or set build.allow_unisolated = true "
                      "(GITSERVER_BUILD_ALLOW_UNISOLATED=1) to run jobs without a sandbox, "
                      "only where every pusher is trusted")


def spellings(path: Path) -> tuple[Path, ...]:
    """``path`` as given (made absolute, ``..`` folded) and as it resolves. The data dir is masked
    under both: the sandbox shows the system directories by their real paths, so a data dir
    reached through a symbolic link or a ``..`` (``/srv/gs`` -> ``/opt/gitserver/data``) is
    inside one even though the name the operator gave is not."""
    given = Path(os.path.normpath(path.absolute()))
    resolved = path.resolve()
    return (given,) if resolved == given else (given, resolved)


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or b in a.parents or a in b.parents


def host_problem(bwrap: str, setpriv: str) -> str:
    """What this host lacks for sandboxes ("" when nothing)."""
    if os.geteuid() != 0:
        return ("the process does not run as root, so it cannot give each job a UID of its own "
                "(run the worker, or the API for synchronous /adjust, as root)")
    if not bwrap:
        return f"bwrap is not installed (Debian/Ubuntu package bubblewrap; looked in {TOOL_PATH})"
    if not setpriv:
        return f"setpriv is not installed (package util-linux; looked in {TOOL_PATH})"
    return _probe(bwrap, setpriv)


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str, setpriv: str) -> str:
    """Start one throw-away sandbox (probed once per process): "" when it works, else why not."""
    argv = bwrap_command(bwrap, setpriv, uid=MIN_SANDBOX_UID, job_dir=None, cwd=Path("/"),
                         network="none", hidden=(), read_only=(), protected=(), argv=["true"])
    try:
        probe = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started: {exc}"
    if probe.returncode != 0:
        reason = probe.stderr.decode(errors="replace").strip()[-300:] or f"exit status {probe.returncode}"
        log.warning("no sandbox for jobs on this host: %s", reason)
        return (f"bwrap cannot create the sandbox's namespaces here ({reason}); the host or the "
                "container runtime must allow unshare and mount for root")
    return ""


# --- one job ------------------------------------------------------------------------------

def bwrap_command(bwrap: str, setpriv: str, *, uid: int, job_dir: Path | None, cwd: Path,
                  network: str, hidden: Sequence[Path], read_only: Sequence[Path],
                  protected: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """The argument list that runs ``argv`` sandboxed as ``uid`` (pure, table-tested).

    Order matters to bwrap: later mounts go on top of earlier ones. The system first, then the
    private /proc, /dev and /tmp, the operator's read-only paths (which may lie under /tmp),
    the masks over the data dir, the job's own directory, and last its read-only parts.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    cmd = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if network == "none":
        cmd.append("--unshare-net")  # bwrap brings loopback up in the new namespace
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            cmd += ["--ro-bind", name, name]
    if network == "host":
        for name in RESOLVER_DIRS:
            cmd += ["--ro-bind-try", name, name]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "1777", "--tmpfs", "/var/tmp"]
    for path in read_only:
        cmd += [*_parent_dirs(path), "--ro-bind", str(path), str(path)]
    for path in hidden:
        if any(_overlaps(path, Path(name)) and not Path(name).is_symlink() for name in SYSTEM_DIRS) \
                or any(_overlaps(path, p) for p in read_only):
            cmd += ["--perms", "0000", "--tmpfs", str(path)]
    if job_dir is not None:
        cmd += [*_parent_dirs(job_dir), "--bind", str(job_dir), str(job_dir)]
    for path in protected:
        cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--chdir", str(cwd),
            # Only what setpriv needs to switch users; it drops them all again.
            "--cap-add", "CAP_SETUID,CAP_SETGID,CAP_SETPCAP", "--",
            setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
    return cmd


def _parent_dirs(path: Path) -> list[str]:
    """Create ``path``'s parents inside the sandbox with mode 0755. bwrap would copy the host's
    modes, and a parent the host keeps at 0700 (a pytest or systemd temp dir) would lock the
    job's UID out of its own directory. Parents in the read-only system are left alone."""
    out: list[str] = []
    for parent in reversed(path.parents):
        if parent == Path("/") or str(parent) in PRIVATE_DIRS:
            continue
        if any(_overlaps(parent, Path(name)) for name in SYSTEM_DIRS):
            continue
        out += ["--perms", "0755", "--dir", str(parent)]
    return out


@dataclasses.dataclass(frozen=True)
class Job:
    """One sandboxed job: a leased UID and the directory it may write (see :func:`job`)."""

    policy: Policy
    uid: int | None  # None: not sandboxed (the operator allowed unisolated jobs)
    root: Path
    protected: tuple[Path, ...] = ()

    @property
    def sandboxed(self) -> bool:
        return self.uid is not None

    def command(self, argv: Sequence[str], cwd: Path, network: str) -> list[str]:
        """``argv`` as this job runs it: inside the sandbox, or unchanged when unisolated."""
        if self.uid is None:
            return list(argv)
        return bwrap_command(self.policy.bwrap, self.policy.setpriv, uid=self.uid, job_dir=self.root,
                             cwd=cwd, network=network, hidden=self.policy.hidden,
                             read_only=self.policy.read_only, protected=self.protected, argv=argv)

    def limits_hook(self) -> Callable[[], None]:
        """A ``preexec_fn`` step for the process that starts the sandbox: RLIMIT_NPROC, which
        root (bwrap) ignores and the job's UID inherits. It counts that UID's processes only,
        so it means "this job's", now that no two jobs share one. Nothing when unsandboxed:
        the count would be the server user's own."""
        limit = self.policy.max_processes
        sandboxed = self.sandboxed

        def apply() -> None:
            if sandboxed:
                resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))

        return apply

    def describe(self, network: str) -> str:
        if self.uid is None:
            return self.policy.describe()
        net = "no network (only its own loopback)" if network == "none" else "the host's network"
        return (f"sandbox: uid {self.uid}, private /tmp and PID namespace, read-only system, "
                f"no data dir, {net}")


@contextlib.contextmanager
def job(policy: Policy, root: Path, *,
        protected: Sequence[Path] = (), give_back: bool = False) -> Iterator[Job]:
    """Lease a UID and hand ``root`` (the job's directory) to it for the block.

    ``protected`` paths under ``root`` stay the server's and are mounted read-only inside (an
    alignment work tree's ``.git``: its config could otherwise name commands the server's own
    git would run afterwards). With ``give_back`` the directory is the server's again after the
    block (the server goes on working in it); by then every process of the job is gone, since
    they die with its PID namespace, so nothing can race the change.
    Raises :class:`SandboxUnavailable` when the job must not run (see :meth:`Policy.refusal`).
    """
    refusal = policy.refusal()
    if refusal:
        raise SandboxUnavailable(refusal)
    if not policy.available:
        yield Job(policy, None, root, tuple(protected))
        return
    with policy.lease() as uid:
        hand_over(root, uid, skip=protected)
        try:
            yield Job(policy, uid, root, tuple(protected))
        finally:
            if give_back:
                hand_over(root, os.geteuid(), os.getegid())


def hand_over(root: Path, uid: int, gid: int | None = None, skip: Sequence[Path] = ()) -> None:
    """Make ``root`` and everything under it ``uid``'s (``root`` itself mode 0700), without
    following symbolic links. Files with more than one hard link keep their owner: they may
    be shared with something outside ``root``."""
    gid = uid if gid is None else gid
    skipped = {str(p) for p in skip}
    os.lchown(root, uid, gid)
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path in skipped:
                continue
            st = os.lstat(path)
            if not os.path.isdir(path) and not os.path.islink(path) and st.st_nlink > 1:
                continue
            os.lchown(path, uid, gid)
