"""Crafted backup files for restore tests: a real backup with one member rewritten (and its
checksum made to match, so only the member's content is wrong), and a stream whose member is
a sparse file, written by GNU tar from a real sparse file."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from gitserver.backup import format as fmt

# The attack of issue 21: ~10 KiB in the file, 3 GiB once tarfile fills in the holes.
SPARSE_DATA = 10 * 1024
SPARSE_SIZE = 3 * 1024 ** 3


def rewritten(backup: bytes, name_suffix: str, content: bytes) -> bytes:
    """``backup`` with the member ending in ``name_suffix`` replaced by ``content`` and
    SHA256SUMS recomputed."""
    out = io.BytesIO()
    sums: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(backup), mode="r|") as src, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            stream = src.extractfile(info)
            data = stream.read() if stream is not None else b""
            if info.name == fmt.SUMS:
                data = fmt.render_sums(sums)
            elif info.name.endswith(name_suffix):
                data = content
            if info.name != fmt.SUMS:
                sums[info.name] = hashlib.sha256(data).hexdigest()
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def manifest_of(backup: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(backup), mode="r|") as src:
        first = src.next()
        assert first is not None and first.name == fmt.MANIFEST
        stream = src.extractfile(first)
        assert stream is not None
        return stream.read()


def with_sparse_member(manifest: bytes, workdir: Path, tar_format: str = "gnu") -> bytes:
    """A stream holding ``manifest`` and then the database member as a sparse file: a few KiB
    of data and a hole up to :data:`SPARSE_SIZE` (GNU tar ``--sparse``, in ``tar_format``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / fmt.MANIFEST).write_bytes(manifest)
    member = workdir / fmt.DATABASE_SQLITE
    member.parent.mkdir(parents=True, exist_ok=True)
    with member.open("wb") as fh:
        fh.write(b"x" * SPARSE_DATA)
        fh.truncate(SPARSE_SIZE)  # a hole: the file system stores only the data above
    made = subprocess.run(["tar", "--sparse", f"--format={tar_format}", "-cf", "-", "-C", str(workdir),
                           fmt.MANIFEST, fmt.DATABASE_SQLITE], capture_output=True, check=True, timeout=120)
    member.unlink()
    return made.stdout
