"""Where a build step runs: the worker's sandbox settings and each step's workspace.

A workspace is a fresh temp dir holding ``src``, a ``git clone --depth 1 --branch repour-<id>``
of the repository, and ``home``, owned by the step's sandbox UID (:mod:`gitserver.process.sandbox`,
docs/sandbox.md); the steps themselves run in :mod:`gitserver.pipelines.build`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from gitserver.config import Config
from gitserver.git.store import git_env
from gitserver.process import sandbox as sandbox_mod
from gitserver.process.children import pid_alive

# Workspaces are <tmp>/gitserver-build-<worker pid>-<random>.
WORKSPACE_PREFIX = "gitserver-build-"


class SandboxError(Exception):
    """A build cannot be set up on this worker (its message says why)."""


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How build steps run on this worker (decided once per worker): the host's sandbox
    policy, the limits, and the most network a step may have."""

    policy: sandbox_mod.Policy
    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    max_timeout: float
    # build_network: "host" lets pipeline files ask for the network; "none" never gives it.
    network: str = "host"
    # Only for steps run without a sandbox by a root worker (build_allow_unisolated): this
    # unprivileged user (build_user) rather than root.
    fallback_uid: int | None = None
    fallback_gid: int | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Sandbox:
        try:
            policy = sandbox_mod.Policy.from_config(cfg)
        except sandbox_mod.SandboxUnavailable as exc:
            raise SandboxError(str(exc)) from exc
        uid = gid = None
        if not policy.available and policy.allow_unisolated and os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(cfg.build_user)
            except KeyError as exc:
                raise SandboxError(f"build_user {cfg.build_user!r} does not exist on this host "
                                   "(builds never run as root)") from exc
            if entry.pw_uid == 0:
                raise SandboxError("build_user must not be root")
            uid, gid = entry.pw_uid, entry.pw_gid
        return cls(policy=policy, cpu_seconds=cfg.build_cpu_seconds,
                   memory_bytes=cfg.build_memory_mb * 1024 * 1024,
                   file_size_bytes=cfg.build_file_size_mb * 1024 * 1024,
                   max_timeout=cfg.build_timeout, network=cfg.build_network,
                   fallback_uid=uid, fallback_gid=gid)

    def describe(self) -> str:
        text = self.policy.describe()
        if not self.policy.available:  # (then the network is the host's: nothing can cut it)
            if self.fallback_uid is not None:
                return text + f"; steps run as uid {self.fallback_uid} (build_user) with the host's network"
            if self.policy.allow_unisolated:
                return text + (f"; steps run as this worker's own user (uid {os.geteuid()}), able "
                               "to read the data dir and the database, with the host's network")
            return text
        if self.network == "none":
            return text + "; build_network is \"none\": no step gets the network"
        return text + "; steps get the network only when the pipeline file says network = \"host\""


@dataclasses.dataclass
class Workspace:
    """A step's directory (``src``, the clone, and ``home``) and the sandbox job owning it."""

    root: Path
    job: sandbox_mod.Job
    cleanup: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)


def prepare_workspace(repo_path: Path, tag: str, sandbox: Sandbox) -> Workspace:
    """A new temp dir holding ``src`` (shallow clone of ``tag``) and ``home``, owned by the
    step's sandbox UID. The caller removes it with :func:`remove_workspace`. Raises
    :class:`SandboxError` when the step cannot be sandboxed and must not run without."""
    refusal = sandbox.policy.refusal()
    if refusal:
        raise SandboxError(refusal)
    root = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-"))
    cleanup = contextlib.ExitStack()
    try:
        (root / "home").mkdir()
        result = subprocess.run(
            ["git", "clone", "--quiet", "--depth", "1", "--branch", tag, "--no-tags",
             f"file://{repo_path}", str(root / "src")],
            env=git_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise SandboxError(f"git clone of {tag} failed: {result.stderr.strip()[-500:]}")
        try:
            job = cleanup.enter_context(sandbox_mod.job(sandbox.policy, root))
        except sandbox_mod.SandboxUnavailable as exc:
            raise SandboxError(str(exc)) from exc
        if not job.sandboxed and sandbox.fallback_uid is not None:
            sandbox_mod.hand_over(root, sandbox.fallback_uid, sandbox.fallback_gid)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        cleanup.close()
        raise
    return Workspace(root, job, cleanup)


def remove_workspace(workspace: Workspace) -> None:
    """Remove the directory, then give its UID back (never the other way round: the next job
    with that UID must not find anything of this one)."""
    shutil.rmtree(workspace.root, ignore_errors=True)
    workspace.cleanup.close()


def sweep_stale_workspaces(directory: Path | None = None) -> int:
    """Remove the workspaces of workers that died without cleaning up (SIGKILL); returns how
    many. A workspace's name carries its worker's pid; live workers' ones are left alone."""
    directory = directory or Path(tempfile.gettempdir())
    removed = 0
    for path in directory.glob(f"{WORKSPACE_PREFIX}*-*"):
        pid_text = path.name[len(WORKSPACE_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
