"""One ``git update-ref --stdin`` transaction that moves refs and the reference log together.

Every writer of a ref the log covers goes through here (docs/provenance.md, "Who writes it,
and when"): the proc-receive hook for a push's refs (gitserver.push.refmove) and the server for
its own (gitserver.provenance.archive_tags). git locks every ref of a transaction,
``refs/gitserver/log`` too, before it changes any, and moves none when one lock or one
compare-and-swap fails: so when the log cannot be written, the ref does not move either. The
refs come first and the log last: git renames the locks into place in that order, so a writer
killed between two renames leaves a moved ref that the log lacks (the reconciler logs it),
never an entry for a move that did not happen.

Standard library and the pure git rules only: the hook imports this on every push.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gitserver.git import protect, refs

LOG_REF = refs.SERVER_LOG_REF
# What the pusher (or a job's log, or a Repour caller) reads when the log cannot be written.
LOG_FAILED = "gitserver could not write the reference log ({why}); nothing was changed"
MAX_REASON = 200


def script(commands: Sequence[protect.RefCommand], log_tip: str | None, log_commit: str | None) -> str:
    """The transaction: the refs, compare-and-swap on their old values (40 zeros: the ref must
    not exist), then the log's ref (from ``log_tip``, None or "" for none yet, to
    ``log_commit``) when there is an entry."""
    lines = [f"update {c.ref} {c.new} {c.old}\n" for c in commands]
    if log_commit is not None:
        lines.append(f"update {LOG_REF} {log_commit} {log_tip or refs.ZERO_OID}\n")
    return "".join(lines)


def log_failure(error: str) -> str | None:
    """The reader's line when git's ``error`` is about the log's ref, else None (one of the
    other refs' compare-and-swap or lock failed). The repository's path is left out of it."""
    if f"'{LOG_REF}'" not in error:
        return None
    return LOG_FAILED.format(why=without_paths(error))


def without_paths(error: str) -> str:
    """git's error line with every quoted path cut to its ``refs/…`` part (a repository's path
    is the server's business), ``fatal:``/``error:`` dropped, at most :data:`MAX_REASON` long."""
    import re  # only on this rare path: the hook does not pay for it on every push

    why = re.sub(r"'[^']*/(refs/[^']*)'", r"'\1'", error).removeprefix("fatal: ").removeprefix("error: ")
    return why[:MAX_REASON]


def git_transaction(stdin: str, message: str, git_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Run the ``update-ref --stdin`` script with reflog ``message``, in ``git_dir`` (else the
    repository git's environment names: the hook's); None when applied, else git's first
    error line."""
    where = ["--git-dir", os.fspath(git_dir)] if git_dir is not None else []
    status, errors = run_git([*where, "update-ref", "-m", message, "--stdin"], stdin.encode(),
                             capture_errors=True)
    if status == 0:
        return None
    lines = [line for line in errors.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[0] if lines else f"git update-ref exited with {status}"


def run_git(args: list[str], stdin: bytes = b"", capture_errors: bool = False) -> tuple[int, bytes]:
    """Run ``git ARGS`` with ``stdin`` as its input, its output dropped: its exit status, and
    with ``capture_errors`` what it wrote on stderr.

    os.posix_spawnp rather than subprocess: this runs inside every push, and importing
    subprocess (threading, selectors, signal) costs about 6 ms of CPU per push. The hook's
    socket back to the daemon is not inheritable, so git does not hold it open; SIGPIPE stays
    ignored in git as Python leaves it, which cannot matter with its output on /dev/null."""
    read_end, write_end = os.pipe()
    err_read, err_write = os.pipe() if capture_errors else (-1, -1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = os.posix_spawnp("git", ["git", *args], os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, err_write if capture_errors else devnull, 2)])
    finally:
        for fd in (read_end, devnull, err_write):
            if fd >= 0:
                os.close(fd)
    try:
        view = memoryview(stdin)
        while view:
            view = view[os.write(write_end, view):]
    except BrokenPipeError:
        pass  # git exited without reading it all; its status says how it went
    finally:
        os.close(write_end)
    errors = _read_all(err_read) if capture_errors else b""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), errors


def _read_all(fd: int) -> bytes:
    """Everything until end-of-file (git's few error lines), then close ``fd``."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
