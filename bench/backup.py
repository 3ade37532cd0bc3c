"""The backup measurement: ``gitserver backup`` and ``gitserver restore`` of the bench's data
against the plain copy an operator would otherwise make with the server stopped — ``tar`` of
the data dir plus ``sqlite3 .backup`` of the database (the same SQLite backup API)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.servers import REPO_ROOT, GitServer


@dataclasses.dataclass(frozen=True)
class Measured:
    seconds: float
    bytes: int


def _files_size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths)


def gitserver_backup(server: GitServer, out: Path) -> Measured:
    started = time.monotonic()
    server.cli("backup", str(out))
    return Measured(time.monotonic() - started, out.stat().st_size)


def gitserver_restore(backup: Path, target: Path) -> Measured:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GITSERVER_")},
           "GITSERVER_DATA_DIR": str(target), "GITSERVER_DATABASE_URL": f"sqlite:///{target / 'gitserver.db'}"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gitserver", "restore", str(backup)], env=env, text=True,
                            capture_output=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"gitserver restore failed: {result.stderr}")
    return Measured(time.monotonic() - started, backup.stat().st_size)


def baseline_backup(data_dir: Path, out_dir: Path) -> Measured:
    """``sqlite3 gitserver.db .backup`` and ``tar cf`` of the rest of the data dir."""
    started = time.monotonic()
    db = out_dir / "gitserver.db"
    source = sqlite3.connect(data_dir / "gitserver.db")
    target = sqlite3.connect(db)
    source.backup(target)
    target.close()
    source.close()
    tar = out_dir / "data.tar"
    subprocess.run(["tar", "cf", str(tar), "-C", str(data_dir), "--exclude=./gitserver.db*",
                    "--exclude=./metrics", "."], check=True)
    return Measured(time.monotonic() - started, _files_size(db, tar))


def baseline_restore(backup_dir: Path, target: Path) -> Measured:
    started = time.monotonic()
    target.mkdir(parents=True)
    subprocess.run(["tar", "xf", str(backup_dir / "data.tar"), "-C", str(target)], check=True)
    subprocess.run(["cp", str(backup_dir / "gitserver.db"), str(target / "gitserver.db")], check=True)
    return Measured(time.monotonic() - started, _files_size(backup_dir / "data.tar", backup_dir / "gitserver.db"))
