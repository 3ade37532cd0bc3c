"""``gitserver backup FILE`` and ``gitserver restore FILE``: the commands around gitserver.backup.run.

What they add to the backup itself: the file written beside FILE and renamed at the end (FILE
is a whole backup or is not there), progress on a terminal, and every OS or database error as
one line rather than a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from gitserver.config import Config


def backup_command(cfg: Config, file: str) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _backup(cfg, file)
    except (OSError, SQLAlchemyError) as exc:
        raise _failure("backup", exc) from exc


def restore_command(cfg: Config, file: str) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _restore(cfg, file)
    except (OSError, SQLAlchemyError) as exc:
        raise _failure("restore", exc) from exc


def _progress_printer() -> Any:
    """Progress lines rewritten in place on a terminal's stderr; nothing when it is not one."""
    if not sys.stderr.isatty():
        return lambda _text: None

    def show(text: str) -> None:
        sys.stderr.write(f"\r\033[K{text[:200]}")
        sys.stderr.flush()

    return show


def _failure(what: str, exc: Exception) -> Exception:
    """An OS or database error of backup/restore as one line (disk full, permissions, a lost
    database connection), not a traceback."""
    from gitserver.policy.errors import BackupError

    if isinstance(exc, OSError):
        detail = (exc.strerror or str(exc)) + (f" ({exc.filename})" if exc.filename else "")
    else:
        detail = f"database error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return BackupError(f"{what} failed: {detail}")


def _backup(cfg: Config, file: str) -> int:
    import os
    import tempfile
    from pathlib import Path

    from gitserver.backup.run import backup
    from gitserver.policy.errors import BackupError
    from gitserver.push.limits import human

    progress = _progress_printer()
    if file == "-":
        if sys.stdout.isatty():
            raise BackupError("refusing to write a backup to a terminal: give a FILE or redirect stdout")
        summary = backup(cfg, sys.stdout.buffer, progress)
        sys.stdout.buffer.flush()
        report = sys.stderr
    else:
        # Written beside FILE and renamed at the end: FILE is a whole backup or is not there.
        target = Path(file).absolute()
        if target.is_dir():
            raise BackupError(f"{file} is a directory; give the backup file's name")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            raise BackupError(f"cannot write in {target.parent}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                summary = backup(cfg, fh, progress)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        report = sys.stdout
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(f"backup of {summary.repositories} repositories ({summary.refs} refs) written: "
          f"{human(summary.bytes)} in {summary.seconds:.1f} s", file=report)
    return 0


def _restore(cfg: Config, file: str) -> int:
    from pathlib import Path

    from gitserver.backup.run import restore
    from gitserver.cmd import check
    from gitserver.cmd import provenance as provenance_commands
    from gitserver.policy.errors import BackupError
    from gitserver.push.limits import human

    progress = _progress_printer()

    def checks(runtime: Any) -> list[str]:  # `gitserver check`: the ledger, archives, hooks
        # A backup holds the refs the database recorded, not the reference logs (whose newest
        # entries may be past the snapshot): each restored repository starts a new log here,
        # which `gitserver verify --since` shows its consumers (docs/provenance.md).
        provenance_commands.start_logs(runtime)
        return check.check(runtime, repair=False).breaches

    if file == "-":
        summary = restore(cfg, sys.stdin.buffer, progress, checks)
    else:
        source = Path(file)
        if not source.is_file():
            raise BackupError(f"cannot read {file}: "
                              + ("it is a directory" if source.is_dir() else "no such file"))
        with source.open("rb") as fh:
            summary = restore(cfg, fh, progress, checks)
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(f"restored {summary.repositories} repositories ({summary.refs} refs) into {cfg.data_dir}: "
          f"{human(summary.bytes)} read in {summary.seconds:.1f} s")
    return 0
