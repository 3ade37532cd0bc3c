"""Deterministic benchmark repositories, written with ``git fast-import`` and cached.

The same parameters always give the same commit ids: contents come from a seeded PRNG and
every author, committer and date is fixed. A generated repository is cached under
``<cache>/<name>-<hash of the parameters>.git`` so reruns skip the generation.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so stale caches are not reused.
GENERATOR_VERSION = 1
BRANCH = "main"
AUTHOR = "Bench Author <bench@example.com>"
EPOCH = 1_700_000_000  # first commit date; each commit is one hour later
LINE_BYTES = 57  # 57 random bytes → one 76-character base64 line


@dataclasses.dataclass(frozen=True)
class RepoSpec:
    """What to generate.

    ``text_files`` files of about ``text_file_bytes`` base64 text are added by the first commit;
    each later commit rewrites one line in ``files_per_commit`` of them (small, delta-friendly
    changes, like source code). ``blob_files`` incompressible files of ``blob_bytes`` each are
    spread over the commits (the "large" repository). A tag ``v<N>`` marks every
    ``tag_every``-th commit and the last one.
    """

    name: str
    commits: int
    text_files: int = 0
    text_file_bytes: int = 0
    files_per_commit: int = 0
    blob_files: int = 0
    blob_bytes: int = 0
    tag_every: int = 0
    seed: int = 1

    def key(self) -> str:
        params = {**dataclasses.asdict(self), "version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def _data(payload: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(payload), payload)


def _text(rng: random.Random, size: int) -> list[bytes]:
    lines = max(1, size // (LINE_BYTES * 4 // 3 + 1))
    return [base64.b64encode(rng.randbytes(LINE_BYTES)) for _ in range(lines)]


def _stream(spec: RepoSpec) -> Iterator[bytes]:
    """The fast-import stream for ``spec``, in chunks."""
    rng = random.Random(spec.seed)
    files: dict[str, list[bytes]] = {}
    paths = [f"src/d{i % 50:02d}/file{i:05d}.txt" for i in range(spec.text_files)]
    blobs_left = spec.blob_files
    mark = 0
    last_commit = 0
    for n in range(spec.commits):
        changes: list[tuple[str, int]] = []
        if n == 0:
            if not paths:
                paths = ["README.md"]
                files["README.md"] = [b"# benchmark repository", b""]
            for path in paths:
                files.setdefault(path, _text(rng, spec.text_file_bytes))
            touched = paths
        else:
            touched = rng.sample(paths, min(spec.files_per_commit, len(paths)))
            for path in touched:
                lines = files[path]
                lines[rng.randrange(len(lines))] = base64.b64encode(rng.randbytes(LINE_BYTES))
        for path in touched:
            mark += 1
            yield b"blob\nmark :%d\n" % mark + _data(b"\n".join(files[path]) + b"\n")
            changes.append((path, mark))
        # Spread the big blobs evenly over the commits.
        due = spec.blob_files * (n + 1) // spec.commits - (spec.blob_files - blobs_left)
        for _ in range(due):
            index = spec.blob_files - blobs_left
            blobs_left -= 1
            mark += 1
            yield b"blob\nmark :%d\n" % mark + _data(rng.randbytes(spec.blob_bytes))
            changes.append((f"blobs/blob{index:04d}.bin", mark))
        mark += 1
        when = EPOCH + n * 3600
        head = [b"commit refs/heads/%s" % BRANCH.encode(), b"mark :%d" % mark,
                b"author %s %d +0000" % (AUTHOR.encode(), when),
                b"committer %s %d +0000" % (AUTHOR.encode(), when)]
        yield b"\n".join(head) + b"\n" + _data(b"commit %d of %s" % (n + 1, spec.name.encode()))
        if last_commit:
            yield b"from :%d\n" % last_commit
        yield b"".join(b"M 100644 :%d %s\n" % (m, p.encode()) for p, m in changes) + b"\n"
        last_commit = mark
        if (spec.tag_every and (n + 1) % spec.tag_every == 0) or n + 1 == spec.commits:
            yield (b"tag v%d\nfrom :%d\ntagger %s %d +0000\n" % (n + 1, mark, AUTHOR.encode(), when)
                   + _data(b"release %d" % (n + 1)))
    yield b"done\n"


def last_tag(spec: RepoSpec) -> str:
    """The tag on the newest commit."""
    return f"v{spec.commits}"


def _git(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "LANG": "C"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


def generate(spec: RepoSpec, cache_dir: Path) -> Path:
    """Return the bare repository for ``spec``, generating it into the cache if missing."""
    final = cache_dir / f"{spec.name}-{spec.key()}.git"
    if (final / "bench-complete").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _git("init", "-q", "--bare", f"--initial-branch={BRANCH}", str(tmp), cwd=cache_dir)
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done",
                             # incompressible blobs: no delta search, store them as they are
                             "--big-file-threshold=1m"], cwd=tmp, stdin=subprocess.PIPE,
                            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"})
    assert proc.stdin is not None
    for chunk in _stream(spec):
        proc.stdin.write(chunk)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed for {spec.name}")
    # fast-import deltas only against the previous blob; a full repack gives the pack (and the
    # bitmap) a real server would have. Both servers serve these very files.
    repack = ["-c", "core.bigFileThreshold=1m", "repack", "-a", "-d", "-q", "--write-bitmap-index"]
    if spec.text_files:
        repack.append("-f")
    _git(*repack, cwd=tmp)
    _git("pack-refs", "--all", cwd=tmp)
    _git("commit-graph", "write", "--reachable", cwd=tmp)
    (tmp / "bench-complete").write_text(json.dumps(dataclasses.asdict(spec)) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def size_bytes(repo: Path) -> int:
    """Bytes of the repository's packs."""
    return sum(p.stat().st_size for p in (repo / "objects" / "pack").glob("*.pack"))


def install_into(source: Path, dest: Path) -> None:
    """Give the empty bare repository ``dest`` the objects and refs of ``source``.

    Pack files are hard-linked when possible (they are immutable), so even the large repository
    is installed in milliseconds; ``dest`` keeps its own config and hooks."""
    pack_dir = dest / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    for item in (source / "objects" / "pack").iterdir():
        target = pack_dir / item.name
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)
    graph = source / "objects" / "info" / "commit-graph"
    if graph.exists():
        (dest / "objects" / "info").mkdir(exist_ok=True)
        shutil.copy2(graph, dest / "objects" / "info" / "commit-graph")
    shutil.copy2(source / "packed-refs", dest / "packed-refs")
    (dest / "HEAD").write_text(f"ref: refs/heads/{BRANCH}\n")
