"""Push limits: the largest blob, the largest push, and the repository's and tenant's quotas.

Checked by the pre-receive hook while the pushed objects are still in git's quarantine
directory (``GIT_QUARANTINE_PATH``): a refused push leaves nothing behind, because git deletes
the quarantine when pre-receive refuses. (Not in proc-receive: git runs that hook after it has
moved the objects into the repository.) git itself enforces the push size during the receive
(``receive.maxInputSize``, see :func:`git_settings`), so an oversized pack is cut off before it
fills the disk; the hook repeats that check for pushes that reached it some other way.

The limits reach the hook in its environment (:class:`PushLimits`, set by whoever starts
receive-pack, from the configuration and the database); the sizes are measured here, on disk,
when the hook runs. Standard library only: the hooks import this, on every push, so it keeps
its imports light (no dataclasses, subprocess or pathlib until a limit is really checked;
docs/performance.md).

Sizes are bytes on disk (apparent file sizes) of everything under the repository directory,
quarantines of pushes in progress excluded. A blob's size is its uncompressed size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple, TypeGuard

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

# The names of the limits, as operators set them and as metrics label them.
MAX_BLOB = "max_blob_bytes"
MAX_PUSH = "max_push_bytes"
REPO_QUOTA = "repo_quota_bytes"
TENANT_QUOTA = "tenant_quota_bytes"
LIMITS = (MAX_BLOB, MAX_PUSH, REPO_QUOTA, TENANT_QUOTA)

ENV_NAMES = {
    MAX_BLOB: "GITSERVER_MAX_BLOB_BYTES",
    MAX_PUSH: "GITSERVER_MAX_PUSH_BYTES",
    REPO_QUOTA: "GITSERVER_REPO_QUOTA_BYTES",
    TENANT_QUOTA: "GITSERVER_TENANT_QUOTA_BYTES",
}
# Bytes a repository and its tenant hold outside the repository directories (their pipeline
# logs, in the database: gitserver.pipelines.logstore), counted with the bytes on disk.
HELD_ELSEWHERE = ("repo_log_bytes", "tenant_log_bytes")
HELD_ENV_NAMES = {"repo_log_bytes": "GITSERVER_REPO_LOG_BYTES",
                  "tenant_log_bytes": "GITSERVER_TENANT_LOG_BYTES"}
ENV_QUARANTINE = "GIT_QUARANTINE_PATH"
ENV_REPO = "GITSERVER_REPO"
# git names its quarantine directories objects/tmp_objdir-incoming-XXXXXX (tmp-objdir.c;
# objects/incoming-XXXXXX before git 2.31).
QUARANTINE_MARK = "incoming-"
# What git's index-pack / unpack-objects say when receive.maxInputSize cuts a push off.
GIT_INPUT_TOO_LARGE = "pack exceeds maximum allowed size"
REFUSED = "push refused"
# How many of a refused push's commits are searched for the path of its largest blob.
MAX_COMMITS_SEARCHED = 200

# How each refusal begins. The limit comes first: receive-pack relays a hook's message to the
# client in side-band packets of 128 bytes, so only a message's start is sure to arrive in one
# piece for whoever reads the stream (metrics).
_MARKERS = {
    MAX_BLOB: f"{REFUSED}: {ENV_NAMES[MAX_BLOB]}",
    MAX_PUSH: f"{REFUSED}: {ENV_NAMES[MAX_PUSH]}",
    REPO_QUOTA: f"{REFUSED}: the quota_bytes of repository",
    TENANT_QUOTA: f"{REFUSED}: the quota_bytes of tenant",
}


class PushLimits(NamedTuple):
    """The limits one push is held to; None or 0 means no limit."""

    max_blob_bytes: int | None = None
    max_push_bytes: int | None = None
    repo_quota_bytes: int | None = None
    tenant_quota_bytes: int | None = None
    repo_log_bytes: int = 0
    tenant_log_bytes: int = 0

    def to_env(self) -> dict[str, str]:
        """The hook's environment variables (only the limits that are set)."""
        env = {ENV_NAMES[name]: str(value) for name, value in self._items() if value}
        env.update({HELD_ENV_NAMES[name]: str(getattr(self, name)) for name in HELD_ELSEWHERE
                    if getattr(self, name)})
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PushLimits:
        """Read what :meth:`to_env` wrote; a malformed value is a server bug, not user input."""
        values: dict[str, int | None] = {}
        for name in LIMITS:
            text = environ.get(ENV_NAMES[name], "").strip()
            values[name] = int(text) if text else None
        repo_log, tenant_log = (int(environ.get(HELD_ENV_NAMES[name], "").strip() or 0) for name in HELD_ELSEWHERE)
        return cls(values[MAX_BLOB], values[MAX_PUSH], values[REPO_QUOTA], values[TENANT_QUOTA],
                   repo_log_bytes=repo_log, tenant_log_bytes=tenant_log)

    def any(self) -> bool:
        return any(value for _, value in self._items())

    def _items(self) -> Iterator[tuple[str, int | None]]:
        return ((name, getattr(self, name)) for name in LIMITS)


NO_LIMITS = PushLimits()


class Measured(NamedTuple):
    """What a push brings and what is already on disk (bytes)."""

    incoming_bytes: int
    largest_blob: tuple[str, int] | None = None  # (object id, size)
    repo_bytes: int = 0
    tenant_bytes: int = 0
    # Other pushes in progress (their quarantines, see _usage): they count against
    # the quotas as if they had landed, so two pushes at once cannot both pass a quota that
    # only one of them fits.
    repo_pending_bytes: int = 0
    tenant_pending_bytes: int = 0
    largest_blob_path: str | None = None  # found only when the largest blob is over the limit


def human(n: int) -> str:
    """``104857600`` → ``100.0 MiB``."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _limit(n: int) -> str:
    """A limit as an operator sets it: ``100 MiB`` for whole MiB, else :func:`human`."""
    return f"{n // 1048576} MiB" if n >= 1048576 and n % 1048576 == 0 else human(n)


def _both(n: int) -> str:
    return human(n) if n < 1024 else f"{human(n)} ({n} bytes)"


def over_limit(limits: PushLimits, measured: Measured, repo: str = "", tenant: str = "") -> str | None:
    """The message refusing the push, or None when it is within every limit (pure).

    The message names the limit and the size, e.g. ``push refused: GITSERVER_MAX_BLOB_BYTES is
    100.0 MiB (104857600 bytes); blob 3f2a… is 300.0 MiB (314572800 bytes)``.
    """
    if limits.max_blob_bytes and measured.largest_blob and measured.largest_blob[1] > limits.max_blob_bytes:
        oid, size = measured.largest_blob
        if measured.largest_blob_path is not None:  # the path the pusher knows, as GitHub names it
            return (f"{_MARKERS[MAX_BLOB]}: file {measured.largest_blob_path} is {human(size)}, over the "
                    f"{_limit(limits.max_blob_bytes)} limit (blob {oid})")
        return f"{_MARKERS[MAX_BLOB]} is {_both(limits.max_blob_bytes)}; blob {oid} is {_both(size)}"
    if limits.max_push_bytes and measured.incoming_bytes > limits.max_push_bytes:
        return (f"{_MARKERS[MAX_PUSH]} is {_both(limits.max_push_bytes)}; "
                f"the pushed objects take {_both(measured.incoming_bytes)}")
    after = measured.repo_bytes + measured.repo_pending_bytes + measured.incoming_bytes
    if limits.repo_quota_bytes and after > limits.repo_quota_bytes:
        return (f"{_MARKERS[REPO_QUOTA]} {repo} is {_both(limits.repo_quota_bytes)}; "
                f"it would grow from {_both(measured.repo_bytes)} to {_both(after)}"
                f"{_pending_note(measured.repo_pending_bytes)}")
    after = measured.tenant_bytes + measured.tenant_pending_bytes + measured.incoming_bytes
    if limits.tenant_quota_bytes and after > limits.tenant_quota_bytes:
        return (f"{_MARKERS[TENANT_QUOTA]} {tenant} is {_both(limits.tenant_quota_bytes)}; "
                f"its repositories would grow from {_both(measured.tenant_bytes)} to {_both(after)}"
                f"{_pending_note(measured.tenant_pending_bytes)}")
    return None


def _pending_note(pending: int) -> str:
    return f", counting {human(pending)} of other pushes in progress" if pending else ""


def limits_named(report: str) -> list[str]:
    """The limits whose refusals appear in ``report`` (receive-pack's output), once each (pure)."""
    found = [name for name, marker in _MARKERS.items() if marker in report]
    if GIT_INPUT_TOO_LARGE in report and MAX_PUSH not in found:
        found.append(MAX_PUSH)
    return found


def input_too_large(limit: int) -> str:
    """What the pusher reads when git cut the pack off at receive.maxInputSize (git's own
    message names only the size)."""
    return f"{_MARKERS[MAX_PUSH]} is {_both(limit)}; the pack is larger; nothing was stored"


def git_settings(limits: PushLimits) -> dict[str, str]:
    """``-c`` settings for receive-pack: git stops reading a pack larger than the push limit."""
    if not limits.max_push_bytes:
        return {}
    return {"receive.maxInputSize": str(limits.max_push_bytes)}


# --- measuring on disk -------------------------------------------------------------------------

def disk_usage(path: Path) -> int:
    """Bytes of the regular files under ``path``, quarantines of pushes in progress excluded.

    Symbolic links are not followed (a repository holds none that git made). A file that
    disappears while we walk (git replacing a pack) is skipped.
    """
    return _usage(path)[0]


# A quarantine this old (by its own and its pack/ directory's modification time) belongs to a
# push that died; the daemon sweeps such directories (quarantine_stale_seconds, 600 s by
# default) and they no longer count as a push in progress.
PENDING_SECONDS = 600.0


def _usage(path: Path, besides: Path | None = None, now: float | None = None) -> tuple[int, int]:
    """(bytes on disk under ``path`` without quarantines, bytes in the quarantines of other
    pushes in progress). The second is counted only with ``besides``: the quarantine of the
    push being checked, which is not one of the others."""
    import time

    own = os.path.realpath(besides) if besides is not None else None
    since = (time.time() if now is None else now) - PENDING_SECONDS
    total = pending = 0
    stack: list[tuple[str | os.PathLike[str], bool]] = [(path, False)]
    while stack:
        directory, in_quarantine = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if in_quarantine or QUARANTINE_MARK not in entry.name:
                        stack.append((entry.path, in_quarantine))
                    elif own is not None and _in_progress(entry, own, since):
                        stack.append((entry.path, True))
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    if in_quarantine:
                        pending += size
                    else:
                        total += size
            except FileNotFoundError:
                continue
    return total, pending


def _in_progress(entry: os.DirEntry[str], own: str, since: float) -> bool:
    """Whether the quarantine ``entry`` is another push's, still in progress."""
    if os.path.realpath(entry.path) == own:
        return False
    newest = entry.stat(follow_symlinks=False).st_mtime
    pack = os.path.join(entry.path, "pack")  # git writes the received pack there
    if os.path.isdir(pack):
        newest = max(newest, os.stat(pack).st_mtime)
    return newest >= since


def tenant_usage(tenant_dir: Path) -> int:
    """Bytes of every repository of a tenant (``<data>/repos/<tenant>``)."""
    return disk_usage(tenant_dir)


def _quarantine_env(quarantine: Path, git_dir: Path | None, alternates: bool) -> dict[str, str]:
    """git's environment to read the quarantine: alone (what this push brought), or with the
    repository's objects as alternates (to read trees the push shares with older commits)."""
    if git_dir is None:
        env = {k: v for k, v in os.environ.items() if k != ENV_QUARANTINE}
        if not alternates:
            env.pop("GIT_ALTERNATE_OBJECT_DIRECTORIES", None)
    else:  # a minimal environment: the daemon's own holds secrets git has no use for
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
               "LANG": "C", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
               "GIT_DIR": str(git_dir)}
        if alternates:
            env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(git_dir / "objects")
    env["GIT_OBJECT_DIRECTORY"] = str(quarantine)
    return env


def quarantine_objects(quarantine: Path, run: Callable[..., subprocess.CompletedProcess[str]] | None = None,
                       git_dir: Path | None = None) -> Iterable[tuple[str, int, str]]:
    """(type, size, object id) of every object in the quarantine, and only there.

    git points the hook at the quarantine with GIT_OBJECT_DIRECTORY and at the repository's
    objects with GIT_ALTERNATE_OBJECT_DIRECTORIES; dropping the alternates makes
    ``--batch-all-objects`` list what this push brought, nothing older. ``git_dir`` names the
    repository when the caller is not one of git's hooks (the SSH daemon answering the hook).
    """
    import subprocess

    run = run or subprocess.run
    result = run(["git", "cat-file", "--batch-all-objects", "--unordered",
                  "--batch-check=%(objecttype) %(objectsize) %(objectname)"],
                 env=_quarantine_env(quarantine, git_dir, alternates=False), stdin=subprocess.DEVNULL,
                 capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines():
        kind, size, oid = line.split(" ", 2)
        yield kind, int(size), oid


def quarantine_blobs(quarantine: Path, run: Callable[..., subprocess.CompletedProcess[str]] | None = None,
                     git_dir: Path | None = None) -> Iterable[tuple[str, int]]:
    """(object id, size) of every blob in the quarantine (:func:`quarantine_objects`)."""
    return ((oid, size) for kind, size, oid in quarantine_objects(quarantine, run, git_dir) if kind == "blob")


def blob_path(quarantine: Path, blob: str, git_dir: Path | None = None) -> str | None:
    """A path at which a commit of this push holds ``blob``, or None: what the pusher knows
    the file by. Only asked when a push is refused for the blob, so it may walk trees."""
    import subprocess

    commits = [oid for kind, _size, oid in quarantine_objects(quarantine, git_dir=git_dir) if kind == "commit"]
    env = _quarantine_env(quarantine, git_dir, alternates=True)
    for commit in commits[:MAX_COMMITS_SEARCHED]:
        listing = subprocess.run(["git", "ls-tree", "-r", "-z", commit], env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, check=False).stdout
        for entry in listing.split(b"\0"):
            meta, _, path = entry.partition(b"\t")
            if meta.endswith(blob.encode()):
                return path.decode("utf-8", "replace")
    return None


def largest(blobs: Iterable[tuple[str, int]]) -> tuple[str, int] | None:
    best = None
    for oid, size in blobs:
        if best is None or size > best[1]:
            best = (oid, size)
    return best


def measure(limits: PushLimits, quarantine: Path, repo_dir: Path, git_dir: Path | None = None) -> Measured:
    """Measure only what the set limits need (a tenant walk is not free). ``git_dir``: see
    :func:`quarantine_blobs` (None inside git's hook, whose environment names the repository)."""
    repo_bytes, repo_pending = _usage(repo_dir, quarantine) if limits.repo_quota_bytes else (0, 0)
    tenant_bytes, tenant_pending = (_usage(repo_dir.parent, quarantine) if limits.tenant_quota_bytes
                                    else (0, 0))
    blob = largest(quarantine_blobs(quarantine, git_dir=git_dir)) if limits.max_blob_bytes else None
    over = blob is not None and limits.max_blob_bytes is not None and blob[1] > limits.max_blob_bytes
    return Measured(
        incoming_bytes=disk_usage(quarantine), largest_blob=blob,
        largest_blob_path=blob_path(quarantine, blob[0], git_dir) if over and blob is not None else None,
        repo_bytes=repo_bytes + (limits.repo_log_bytes if limits.repo_quota_bytes else 0),
        tenant_bytes=tenant_bytes + (limits.tenant_log_bytes if limits.tenant_quota_bytes else 0),
        repo_pending_bytes=repo_pending, tenant_pending_bytes=tenant_pending,
    )


def check_push(environ: Mapping[str, str], repo_dir: Path | None = None,
               measure_fn: Callable[[PushLimits, Path, Path], Measured] | None = None) -> str | None:
    """The pre-receive hook's own check (when no gitserver process answers it, see
    :class:`QuarantineCheck`): the message refusing the push in quarantine, or None.

    Nothing is measured when no limit is set, or when the push brought no objects (git makes
    no quarantine then).
    """
    limits = PushLimits.from_env(environ)
    quarantine = environ.get(ENV_QUARANTINE, "")
    if not limits.any() or not quarantine:
        return None
    from pathlib import Path

    repo_dir = repo_dir or Path(environ.get("GIT_DIR", ".")).resolve()
    repo = environ.get(ENV_REPO, repo_dir.name.removesuffix(".git"))
    return QuarantineCheck(limits, repo_dir, repo).check(Path(quarantine), measure_fn)


def is_quarantine_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` can be the directory name of a push quarantine (git's
    ``tmp_objdir-incoming-XXXXXX``): nothing that could lead out of ``objects/``."""
    return (isinstance(name, str) and QUARANTINE_MARK in name and len(name) <= 100
            and all(c.isascii() and (c.isalnum() or c in "_-") for c in name))


class QuarantineCheck(NamedTuple):
    """The limits of the pushes into one repository, checked on a quarantine by name.

    The process that started receive-pack (the SSH daemon, Repour) answers the pre-receive
    hook with this over the hook's socket (gitserver.push.messages ``PreReceive`` and
    ``Limits``), so the hook is a shell script and a push starts no second Python interpreter
    (docs/performance.md). The hook sends only the quarantine's directory name; it is looked
    up under the repository's own ``objects/``, so a request can name nothing else.
    """

    limits: PushLimits
    repo_dir: Path
    repo: str  # tenant/name, as the messages name it

    def quarantine(self, name: object) -> Path:
        """``objects/NAME`` of the repository; ValueError unless NAME is a push quarantine
        there (git's ``tmp_objdir-incoming-XXXXXX``)."""
        if not is_quarantine_name(name):
            raise ValueError("malformed quarantine name in hook message")
        path = self.repo_dir / "objects" / name
        if not path.is_dir():
            raise ValueError("no such quarantine in the repository")
        return path

    def check(self, quarantine: Path,
              measure_fn: Callable[[PushLimits, Path, Path], Measured] | None = None,
              outside_git: bool = False) -> str | None:
        """The message refusing the push in ``quarantine``, or None (see :func:`over_limit`).
        ``outside_git``: called by the daemon, not from git's hook, so git is told the
        repository and gets a minimal environment (:func:`quarantine_blobs`)."""
        if not self.limits.any():
            return None
        if outside_git:
            measured = measure(self.limits, quarantine, self.repo_dir, git_dir=self.repo_dir)
        else:
            measured = (measure_fn or measure)(self.limits, quarantine, self.repo_dir)
        return over_limit(self.limits, measured, repo=self.repo, tenant=self.repo.partition("/")[0])
