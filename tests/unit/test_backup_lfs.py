"""gitserver.backup.lfs: objects into a backup stream, checked, and back into the configured
store (the S3 side runs against moto's server in tests/functional/test_lfs_s3.py)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from gitserver import config as config_mod
from gitserver.backup import lfs as lfs_backup
from gitserver.backup.run import _Writer
from gitserver.lfs.store import LocalStore
from gitserver.policy.errors import BackupError

DATA = b"an lfs object " * 500
OID = hashlib.sha256(DATA).hexdigest()


def put(store: LocalStore, content: bytes, oid: str = OID) -> None:
    path = store.path(oid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def backup_members(config: config_mod.Config, objects: list[tuple[str, int]]) -> dict[str, bytes]:
    out = io.BytesIO()
    writer = _Writer(out)
    lfs_backup.add_objects(config, writer.add_stream, objects, lambda _text: None)
    writer.close()
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_objects_go_into_the_backup_checked(tmp_path: Path) -> None:
    config = config_mod.load(environ={}, data_dir=str(tmp_path / "data"))
    store = LocalStore(config.lfs_dir)
    put(store, DATA)
    assert backup_members(config, [(OID, len(DATA))])[f"lfs/{OID}"] == DATA
    with pytest.raises(BackupError, match="missing from"):
        backup_members(config, [("0" * 64, 3)])
    put(store, DATA[:-1] + b"!")
    with pytest.raises(BackupError, match="damaged"):
        backup_members(config, [(OID, len(DATA))])
    put(store, DATA[:-1])
    with pytest.raises(BackupError, match=f"not the recorded {len(DATA)} bytes"):
        backup_members(config, [(OID, len(DATA))])


def test_restore_writes_into_the_configured_store(tmp_path: Path) -> None:
    member = tmp_path / "unpacked" / OID
    member.parent.mkdir()
    member.write_bytes(DATA)
    staged = tmp_path / "staged"
    default = config_mod.load(environ={}, data_dir=str(tmp_path / "data"))
    lfs_backup.restore_objects(default, staged, [member])
    assert (staged / "lfs" / "objects" / OID[:2] / OID[2:4] / OID).read_bytes() == DATA
    elsewhere = tmp_path / "objects-elsewhere"
    other = config_mod.load(environ={}, data_dir=str(tmp_path / "data2"), lfs_store=str(elsewhere))
    lfs_backup.restore_objects(other, tmp_path / "staged2", [member])
    assert LocalStore(elsewhere).open(OID).read() == DATA
    assert not (tmp_path / "staged2" / "lfs" / "objects").exists()
    assert list((elsewhere / "tmp").iterdir()) == []
