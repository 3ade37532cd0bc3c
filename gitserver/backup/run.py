"""``gitserver backup`` and ``gitserver restore``: the steps, in the order that keeps them safe.

Backup: snapshot the database (its dump and the refs it records are one instant), then stream
the manifest, the dump, the host keys and, per repository, its recorded refs and one pack of
what they reach, then the checksums. Pushes go on meanwhile; what they add after the snapshot
is simply not in the backup.

Restore: refuse a non-empty target; read the whole stream into a staging directory beside the
data dir, checking every member's name and checksum; build the repositories there; move the
staging directory into place; load the database; migrate it and reinstall the hooks; verify
every repository's refs on disk against the backup. A failure at any step removes what was made,
so the target is left empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from sqlalchemy import select, update

from gitserver import __version__
from gitserver.backup import database, logcut, repos
from gitserver.backup import format as fmt
from gitserver.backup import lfs as lfs_backup
from gitserver.backup.ledger import read_ledger
from gitserver.config import Config
from gitserver.git.store import RepoStore
from gitserver.policy.errors import BackupError
from gitserver.push import limits
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024

Progress = Callable[[str], None]
# What must hold after a restore, as problem lines (empty: all well).
Checks = Callable[[Runtime], list[str]]


class Readable(Protocol):
    """What restore reads from: a file, stdin, or a wrapper counting what passed."""

    def read(self, size: int = -1, /) -> bytes: ...


def _quiet(_text: str) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Summary:
    repositories: int
    refs: int
    bytes: int
    seconds: float


class _HashingReader:
    """Feeds a file to tarfile while hashing what it reads."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


class _CountingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


class _Writer:
    """The tar stream of a backup, and the checksums of what went into it."""

    def __init__(self, out: BinaryIO) -> None:
        self.counter = _CountingWriter(out)
        # Closed by close(), which first appends the checksums: not a with-block's job.
        self.tar = tarfile.open(fileobj=cast(IO[bytes], self.counter), mode="w|",  # noqa: SIM115
                                format=tarfile.PAX_FORMAT)
        self.sums: dict[str, str] = {}
        self.mtime = int(time.time())

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, io.BytesIO(data), len(data), mode)

    def add_file(self, name: str, path: Path, mode: int = 0o644) -> None:
        with path.open("rb") as fh:
            self._add(name, fh, os.fstat(fh.fileno()).st_size, mode)

    def add_stream(self, name: str, fh: BinaryIO, size: int) -> str:
        """``size`` bytes of ``fh`` as member ``name``; their SHA-256."""
        self._add(name, fh, size, 0o644)
        return self.sums[name]

    def _add(self, name: str, fh: BinaryIO, size: int, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, self.mtime
        reader = _HashingReader(fh)
        self.tar.addfile(info, cast(IO[bytes], reader))
        self.sums[name] = reader.digest.hexdigest()

    def close(self) -> int:
        self.add_bytes(fmt.SUMS, fmt.render_sums(self.sums))
        self.tar.close()
        self.counter.flush()
        return self.counter.count


def backup(config: Config, out: BinaryIO, progress: Progress = _quiet) -> Summary:
    """Write a backup of the whole server to ``out`` (a stream: nothing is seeked)."""
    started = time.monotonic()
    url = config.effective_database_url
    with tempfile.TemporaryDirectory(prefix="gitserver-backup-") as tmp:
        work = Path(tmp)
        progress("snapshotting the database")
        with database.snapshot(url, work) as snap:
            ledgers = read_ledger(snap.session)
            lfs_objects = lfs_backup.recorded_objects(snap.session)
            manifest = fmt.Manifest(dialect=snap.dialect, created_at=_now(),
                                    gitserver_version=__version__,
                                    schema_revision=snap.schema_revision, repositories=len(ledgers))
        store = RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir)
        # Every repository's refs and log cut before the manifest, which comes first and names the cuts.
        held = [(ledger, logcut.with_log(store.path(ledger.tenant, ledger.name), ledger, manifest))
                for ledger in ledgers]
        writer = _Writer(out)
        writer.add_bytes(fmt.MANIFEST, manifest.to_json())
        writer.add_file(fmt.DATABASE_MEMBERS[snap.dialect], snap.dump, mode=0o600)
        snap.dump.unlink()
        for key in sorted(config.host_key_dir.glob("ssh_host_*_key*")):
            if key.is_file() and not key.name.endswith(".tmp"):
                writer.add_file(f"{fmt.HOST_KEYS}/{key.name}", key,
                                mode=0o644 if key.name.endswith(".pub") else 0o600)
        for key in sorted(config.signing_dir.glob("*")):
            if key.is_file() and fmt.classify(f"{fmt.SIGNING}/{key.name}").kind == "signing_key":
                writer.add_file(f"{fmt.SIGNING}/{key.name}", key, mode=0o600)
        ref_count = 0
        for number, (ledger, refs) in enumerate(held, start=1):
            progress(f"repository {number}/{len(ledgers)} {ledger.tenant}/{ledger.name}, "
                     f"{limits.human(writer.counter.count)} written")
            path = store.path(ledger.tenant, ledger.name)
            writer.add_bytes(fmt.repo_member(ledger.tenant, ledger.name, fmt.REFS_FILE), refs.render())
            if refs.refs:
                pack = work / "objects.pack"
                repos.write_pack(path, list(refs.refs.values()), pack, f"{ledger.tenant}/{ledger.name}")
                writer.add_file(fmt.repo_member(ledger.tenant, ledger.name, fmt.PACK_FILE), pack)
                pack.unlink()
            ref_count += len(refs.refs)
        lfs_backup.add_objects(config, writer.add_stream, lfs_objects, progress)
        size = writer.close()
    return Summary(len(ledgers), ref_count, size, time.monotonic() - started)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# -- restore ------------------------------------------------------------------------------

@dataclasses.dataclass
class _Read:
    """What the stream held, checked: the manifest, and where each member was put."""

    manifest: fmt.Manifest
    database: Path
    host_keys: list[Path]
    repos: dict[tuple[str, str], dict[str, Path]]
    refs: dict[tuple[str, str], fmt.RepoRefs]
    lfs_objects: list[Path] = dataclasses.field(default_factory=list)


def _no_checks(_runtime: Runtime) -> list[str]:
    return []


def restore(config: Config, source: BinaryIO, progress: Progress = _quiet,
            checks: Checks = _no_checks) -> Summary:
    """Restore a backup into the empty data dir and empty database of ``config``; ``checks``
    (``gitserver check`` in the CLI) must find nothing wrong with the result, or it is undone."""
    started = time.monotonic()
    url = config.effective_database_url
    data_dir = config.data_dir
    _ensure_empty_dir(data_dir)
    database.ensure_empty(url)
    # Staged inside an existing (empty) data dir, which may be a mount point that cannot be
    # renamed; beside a new one. Either way on the data dir's file system, so moves are renames.
    existed = data_dir.exists()
    stage_in = data_dir if existed else data_dir.parent
    stage_in.mkdir(parents=True, exist_ok=True)
    counted = _CountingReader(source)
    unpacked = _staging(stage_in, data_dir.name, "read")
    try:
        read = _read_stream(counted, unpacked,
                            lambda name: progress(f"reading and checking the backup: {name}, "
                                                  f"{limits.human(counted.count)} read"))
        _check_compatible(read.manifest, database.dialect(url))
        staged = _staging(stage_in, data_dir.name, "data")
        try:
            ref_count = _build_data_dir(config, read, staged, progress)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        _move_into_place(staged, data_dir, existed)
        try:
            progress("loading the database")
            database.restore(url, read.database)
            _finish(config, read, progress, checks)
        except BaseException:
            _undo(config, existed, keep=unpacked)
            raise
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    return Summary(len(read.repos), ref_count, counted.count, time.monotonic() - started)


def _check_compatible(manifest: fmt.Manifest, target_dialect: str) -> None:
    """Refuse, before anything is written, a backup this gitserver cannot load."""
    from alembic.script import ScriptDirectory

    from gitserver.db.session import alembic_config

    if manifest.dialect != target_dialect:
        raise BackupError(f"this backup holds a {manifest.dialect} database and the target is "
                          f"{target_dialect}: restore into the same kind of database")
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}
    if manifest.schema_revision not in known:
        raise BackupError(f"this backup was made by a newer gitserver ({manifest.gitserver_version}, schema "
                          f"{manifest.schema_revision}): restore it with that version or a later one")


class _CountingReader:
    def __init__(self, source: Readable) -> None:
        self.source = source
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.count += len(data)
        return data


def _ensure_empty_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"the target data dir {path} is not empty; restore needs an empty or new "
                          "directory (do not run `gitserver init` before restoring)")


def _staging(parent: Path, name: str, what: str) -> Path:
    """A new hidden directory in ``parent``, so nobody takes it for a data dir."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.restore-{what}-", dir=parent))


def _move_into_place(staged: Path, data_dir: Path, existed: bool) -> None:
    if not existed:
        os.rename(staged, data_dir)
        return
    for entry in staged.iterdir():
        os.rename(entry, data_dir / entry.name)
    staged.rmdir()


def _read_stream(source: Readable, into: Path, progress: Progress = _quiet) -> _Read:
    """Unpack the stream into ``into``, refusing anything but a complete, unaltered backup."""
    sums: dict[str, str] = {}
    expected: dict[str, str] | None = None
    manifest: fmt.Manifest | None = None
    database_path: Path | None = None
    host_keys: list[Path] = []
    lfs_objects: list[Path] = []
    repo_members: dict[tuple[str, str], dict[str, Path]] = {}
    try:
        with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|") as tar:
            for info in tar:
                if expected is not None:
                    raise fmt.FormatError(f"member {info.name[:200]!r} after {fmt.SUMS}")
                member = fmt.classify(info.name)
                progress(info.name)
                if not info.isreg():
                    raise fmt.FormatError(f"member {info.name!r} is not a regular file")
                if info.issparse():
                    # tarfile would hand back its holes as zeros: a few KiB in the file could
                    # write gigabytes into staging before the checksums refuse it. A backup
                    # never writes a sparse member.
                    raise fmt.FormatError(f"member {info.name!r} is a sparse file")
                if info.name in sums:
                    raise fmt.FormatError(f"member {info.name!r} appears twice")
                if manifest is None and member.kind != "manifest":
                    raise fmt.FormatError(f"this is not a gitserver backup (it starts with {info.name[:200]!r})")
                stream = tar.extractfile(info)
                assert stream is not None  # a regular file
                if member.kind in ("manifest", "sums"):
                    data = stream.read()
                    if member.kind == "sums":
                        expected = fmt.parse_sums(data)
                        continue
                    sums[info.name] = hashlib.sha256(data).hexdigest()
                    manifest = fmt.Manifest.from_json(data)
                    continue
                path = into / info.name
                path.parent.mkdir(parents=True, exist_ok=True)
                sums[info.name] = _copy_hashing(stream, path)
                if member.kind == "database":
                    database_path = path
                elif member.kind == "host_key":
                    host_keys.append(path)
                elif member.kind == "lfs":
                    if sums[info.name] != path.name:  # content-addressed: the name is the digest
                        raise fmt.FormatError(f"member {info.name!r} does not hold the object it names")
                    lfs_objects.append(path)
                elif member.kind == "signing_key":
                    host_keys.append(path)  # copied beside the host keys' rule: see _build_data_dir
                else:
                    repo_members.setdefault((member.tenant, member.repo), {})[member.kind] = path
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"the backup file is truncated or damaged: {exc}") from exc
    except fmt.FormatError as exc:
        raise BackupError(f"the backup file is not valid: {exc}") from exc
    if manifest is None:
        raise BackupError("the backup file is empty or not a gitserver backup")
    if expected is None:
        raise BackupError(f"the backup file is truncated: it does not end with {fmt.SUMS}")
    bad = sorted(name for name in set(sums) | set(expected) if sums.get(name) != expected.get(name))
    if bad:
        raise BackupError(f"the backup file is damaged: checksum mismatch or missing member {bad[0]!r}"
                          + (f" and {len(bad) - 1} more" if len(bad) > 1 else ""))
    if database_path is None or database_path.name != Path(fmt.DATABASE_MEMBERS[manifest.dialect]).name:
        raise BackupError("the backup file holds no database")
    if any("refs" not in members for members in repo_members.values()):
        raise BackupError("the backup file has a repository pack without its refs")
    if len(repo_members) != manifest.repositories:
        raise BackupError(f"the backup file holds {len(repo_members)} repositories, its manifest says "
                          f"{manifest.repositories}")
    return _Read(manifest, database_path, host_keys, repo_members, _parse_refs(manifest, repo_members), lfs_objects)


def _parse_refs(manifest: fmt.Manifest,
                repo_members: dict[tuple[str, str], dict[str, Path]]) -> dict[tuple[str, str], fmt.RepoRefs]:
    """Every repository's refs file, parsed before anything is built from them."""
    parsed = {}
    for (tenant, name), members in sorted(repo_members.items()):
        try:
            parsed[(tenant, name)] = fmt.RepoRefs.parse(members["refs"].read_bytes(), f"{tenant}/{name} refs")
        except fmt.FormatError as exc:
            raise BackupError(f"the backup file is not valid: {exc}") from exc
        logcut.check_cut(manifest, tenant, name, parsed[(tenant, name)])
    return parsed


def _copy_hashing(stream: Readable, path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _build_data_dir(config: Config, read: _Read, staged: Path, progress: Progress) -> int:
    """The data dir's repositories, host keys and signing keys, built in ``staged``; the
    number of refs."""
    keys = staged / config.host_key_dir.relative_to(config.data_dir)
    keys.mkdir(mode=0o700, parents=True)
    signing = staged / config.signing_dir.relative_to(config.data_dir)
    signing.mkdir(mode=0o700, parents=True)
    for key in read.host_keys:
        if key.parent.name == fmt.SIGNING:
            shutil.copyfile(key, signing / key.name)
            os.chmod(signing / key.name, 0o600)
            continue
        shutil.copyfile(key, keys / key.name)
        os.chmod(keys / key.name, 0o644 if key.name.endswith(".pub") else 0o600)
    lfs_backup.restore_objects(config, staged, read.lfs_objects)
    store = RepoStore(root=staged / config.repos_dir.relative_to(config.data_dir), hooks_dir=config.hooks_dir)
    store.root.mkdir(parents=True)
    count = 0
    for number, ((tenant, name), members) in enumerate(sorted(read.repos.items()), start=1):
        progress(f"repository {number}/{len(read.repos)} {tenant}/{name}")
        refs = read.refs[(tenant, name)]
        if refs.refs and "pack" not in members:
            raise BackupError(f"the backup file has refs of {tenant}/{name} but not its objects")
        repos.restore_repo(store, tenant, name, refs, members.get("pack"))
        count += len(refs.refs)
    return count


def _finish(config: Config, read: _Read, progress: Progress, checks: Checks) -> None:
    """Migrate the restored database, reinstall the hooks, and check the result: every
    repository has exactly the backup's refs, and ``checks`` find nothing wrong."""
    from gitserver.db import models
    from gitserver.db.session import transaction, upgrade
    from gitserver.git.store import install_hooks

    progress("migrating the database and installing the hooks")
    upgrade(config.effective_database_url)
    install_hooks(config.hooks_dir, config.data_dir)
    runtime = Runtime.create(config, pool_size=1)
    try:
        with transaction(runtime.sessions) as session:
            # The reconciler's fingerprints describe the source's ref files, not these.
            session.execute(update(models.Repository).values(refs_fingerprint=""))
            names = session.execute(select(models.Tenant.name, models.Repository.name)
                                    .join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)).all()
        progress("verifying")
        problems = _compare(config, read, {(t, r) for t, r in names})
        if not problems:
            problems = checks(runtime)
    finally:
        runtime.dispose()
    if problems:
        raise BackupError("the restored server does not pass its checks: " + "; ".join(problems[:5])
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def _compare(config: Config, read: _Read, names: set[tuple[str, str]]) -> list[str]:
    """Every repository of the database is on disk with exactly the refs of the backup."""
    problems = []
    if names != set(read.repos):
        problems.append("the database's repositories and the backup's repositories differ")
    store = RepoStore(root=config.repos_dir, hooks_dir=config.hooks_dir)
    for tenant, name in read.repos:
        if repos.disk_refs(store.path(tenant, name)) != dict(read.refs[(tenant, name)].refs):
            problems.append(f"{tenant}/{name}: refs on disk differ from the backup")
    return problems


def _undo(config: Config, existed: bool, keep: Path) -> None:
    """Empty the target again: it was empty (or missing) when the restore began."""
    log.info("restore failed: removing the partly restored data dir and database")
    if existed:
        for entry in config.data_dir.iterdir():
            if entry != keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    else:
        shutil.rmtree(config.data_dir, ignore_errors=True)
    with contextlib.suppress(Exception):
        database.undo(config.effective_database_url)
