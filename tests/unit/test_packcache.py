"""The pack cache (gitserver.git.packcache) with the real git: what upload-pack asks for, served
byte for byte; one pack-objects for identical fetches at once; a killed writer; the bound.

Requests are the real ones: a recording hook captures what ``git upload-pack`` hands
pack-objects for each kind of fetch (protocol v0 and v2, shallow, filtered, with haves).
``pack.threads=1`` makes pack-objects itself deterministic, so the cache's bytes can be
compared with a direct run's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gitserver.git import packcache, store

RECORDER = """#!/bin/sh
dir=$(dirname "$0")
printf '%s\\n' "$@" > "$dir/args"
cat > "$dir/stdin"
exec "$@" < "$dir/stdin"
"""
ONE_THREAD = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "pack.threads", "GIT_CONFIG_VALUE_0": "1"}


def git(*args: str, cwd: Path, env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True, **kw)  # type: ignore[call-overload]


@pytest.fixture
def origin(tmp_path: Path, git_env: dict[str, str]) -> Path:
    """A bare repository with three commits on main and a tag."""
    bare = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path, env=git_env)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path, env=git_env)
    for n in range(3):
        (work / f"file{n}.txt").write_text(f"content {n}\n" * 200)
        (work / "big.bin").write_bytes(os.urandom(20_000))
        git("add", "-A", cwd=work, env=git_env)
        git("commit", "-q", "-m", f"commit {n}", cwd=work, env=git_env)
    git("tag", "-a", "-m", "v1", "v1", cwd=work, env=git_env)
    git("push", "-q", "origin", "main", "v1", cwd=work, env=git_env)
    return bare


def hook(cache: Path, max_bytes: int = 10**9, max_age: float = 300) -> list[str]:
    return [sys.executable, "-m", "gitserver", "pack-objects-hook", str(cache), str(max_bytes), str(max_age)]


def script(cache: Path, where: Path, python: str = sys.executable, max_age: float = 300) -> list[str]:
    """The installed ``pack-objects`` hook script (it serves hits itself), rendered into ``where``
    with ``python`` as the interpreter it hands the rest to."""
    path = where / "pack-objects-hook"
    path.write_text(store.rendered_hook(store.PACK_OBJECTS_HOOK, where, python=python))
    path.chmod(0o755)
    return [str(path), str(cache), str(10**9), f"{max_age:g}"]


def clone(origin: Path, dest: Path, env: dict[str, str], pack_hook: str | None, *options: str,
          protocol: str = "2", check: bool = True) -> subprocess.CompletedProcess[bytes]:
    hook_setting = f"-c 'uploadpack.packObjectsHook={pack_hook}' " if pack_hook else ""
    upload_pack = f"git {hook_setting}-c uploadpack.allowFilter=true upload-pack"
    return subprocess.run(["git", "-c", f"protocol.version={protocol}", "clone", "-q", "--no-local",
                           f"--upload-pack={upload_pack}", *options, str(origin), str(dest)],
                          env=env, capture_output=True, check=check)


def record(origin: Path, tmp_path: Path, env: dict[str, str], *options: str, protocol: str = "2",
           have: bool = False) -> tuple[list[str], bytes]:
    """The pack-objects arguments and request upload-pack makes for this fetch."""
    rec = tmp_path / f"rec-{len(list(tmp_path.glob('rec-*')))}"
    rec.mkdir()
    (rec / "hook").write_text(RECORDER)
    (rec / "hook").chmod(0o755)
    dest = rec / "clone"
    if have:  # a clone, a new commit on the origin, then a fetch: the request carries haves
        clone(origin, dest, env, None, "--branch", "main", protocol=protocol)
        work = origin.parent / "work"
        (work / "later.txt").write_text("later\n")
        git("add", "-A", cwd=work, env=env)
        git("commit", "-q", "-m", "later", cwd=work, env=env)
        git("push", "-q", "origin", "main", cwd=work, env=env)
        git("-c", f"protocol.version={protocol}", "fetch", "-q",
            f"--upload-pack=git -c 'uploadpack.packObjectsHook={rec / 'hook'}' upload-pack", "origin",
            cwd=dest, env=env)
    else:
        clone(origin, dest, env, str(rec / "hook"), *options, protocol=protocol)
    args = (rec / "args").read_text().splitlines()
    return args, (rec / "stdin").read_bytes()


CASES = {
    "v2 full": ((), "2", False),
    "v0 full": ((), "0", False),
    "v2 shallow tag": (("--depth", "1", "--branch", "v1"), "2", False),
    "v0 shallow": (("--depth", "1"), "0", False),
    "v2 blob:none": (("--filter=blob:none",), "2", False),
    "v2 haves": ((), "2", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cache_serves_exactly_what_pack_objects_writes(case: str, origin: Path, tmp_path: Path,
                                                           git_env: dict[str, str]) -> None:
    options, protocol, have = CASES[case]
    args, request = record(origin, tmp_path, git_env, *options, protocol=protocol, have=have)
    assert args[0] == "git" and "pack-objects" in args, args
    env = {**git_env, **ONE_THREAD}
    direct = subprocess.run(args, input=request, cwd=origin, env=env, capture_output=True, check=True).stdout
    cache = tmp_path / "cache"
    served = [subprocess.run([*hook(cache), *args], input=request, cwd=origin, env=env, capture_output=True,
                             check=True).stdout for _ in range(2)]
    assert served[0] == direct, "a miss must pass pack-objects' bytes through"
    assert served[1] == direct, "a hit must be the same bytes"
    assert (packcache.counter(cache, packcache.MISSES), packcache.counter(cache, packcache.HITS)) == (1, 1)


@pytest.mark.parametrize("case", ["v2 full", "v0 shallow", "v2 haves"])
def test_the_hook_script_keys_entries_as_the_python_side_does(case: str, origin: Path, tmp_path: Path,
                                                              git_env: dict[str, str]) -> None:
    # The script serves hits by the key it computes; the Python side writes entries under it.
    # Were the two digests to differ, a direct call would never find the script's entries.
    options, protocol, have = CASES[case]
    args, request = record(origin, tmp_path, git_env, *options, protocol=protocol, have=have)
    cache = tmp_path / "cache"
    miss = subprocess.run([*script(cache, tmp_path), *args], input=request, cwd=origin, env=git_env,
                          capture_output=True, check=True)
    assert miss.stderr == b"", "a miss is no news: the client would show it as remote: …"
    assert [p.name for p in cache.glob("*.pack")] == [packcache.request_key(origin, args[1:], request) + ".pack"]


def test_a_hit_is_served_by_the_script_without_python(origin: Path, tmp_path: Path,
                                                      git_env: dict[str, str]) -> None:
    args, request = record(origin, tmp_path, git_env, have=True)
    env = {**git_env, **ONE_THREAD}
    direct = subprocess.run(args, input=request, cwd=origin, env=env, capture_output=True, check=True).stdout
    cache = tmp_path / "cache"
    subprocess.run([*script(cache, tmp_path), *args], input=request, cwd=origin, env=env, capture_output=True,
                   check=True)
    no_python = script(cache, tmp_path, python="/bin/false")  # a miss could only fail now
    hit = subprocess.run([*no_python, *args], input=request, cwd=origin, env=env, capture_output=True, check=True)
    assert hit.stdout == direct
    assert (packcache.counter(cache, packcache.MISSES), packcache.counter(cache, packcache.HITS)) == (1, 1)
    # A pack past its age is never served by the script: it hands the request over.
    [pack] = cache.glob("*.pack")
    os.utime(pack, (time.time() - 600, time.time() - 600))
    assert subprocess.run([*no_python, *args], input=request, cwd=origin, env=env,
                          capture_output=True).returncode != 0
    # Nor is an entry made before the tags changed (the pack depends on them).
    git("tag", "-a", "-m", "v2", "v2", "main", cwd=origin, env=env)
    os.utime(pack)
    assert subprocess.run([*no_python, *args], input=request, cwd=origin, env=env,
                          capture_output=True).returncode != 0


def test_real_clones_through_the_cache_are_whole(origin: Path, tmp_path: Path, git_env: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    command = " ".join(hook(cache))
    heads = []
    for n, options in enumerate([(), (), ("--depth", "1", "--branch", "v1"), ("--filter=blob:none",)]):
        dest = tmp_path / f"c{n}"
        clone(origin, dest, git_env, command, *options)
        git("fsck", "--no-progress", cwd=dest, env=git_env)
        heads.append(git("rev-parse", "HEAD", cwd=dest, env=git_env).stdout)
    assert len(set(heads)) == 1
    assert packcache.counter(cache, packcache.MISSES) == 3  # the second full clone was a hit
    assert packcache.counter(cache, packcache.HITS) == 1


def test_identical_fetches_at_once_share_one_pack_objects(origin: Path, tmp_path: Path,
                                                          git_env: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    command = " ".join(hook(cache))
    results: list[subprocess.CompletedProcess[bytes]] = []

    def one(n: int) -> None:
        results.append(clone(origin, tmp_path / f"c{n}", git_env, command, "--depth", "1", "--branch", "v1",
                             check=False))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results if r.returncode]
    assert packcache.counter(cache, packcache.MISSES) == 1
    assert packcache.counter(cache, packcache.HITS) == 15


def test_a_killed_writer_serves_no_torn_pack_and_the_next_fetch_is_whole(
        tmp_path: Path, git_env: dict[str, str]) -> None:
    # A repository big enough that pack-objects writes for a while; the writer is killed once
    # its part file has bytes, while a reader follows it.
    big, work = _big_repository(tmp_path, git_env)
    args, request = record(big, tmp_path, git_env)
    cache = tmp_path / "cache"
    # The writer's output goes to a pipe nobody reads for now, so it stalls mid-pack.
    writer, reader = _writer_and_follower(cache, args, request, big, git_env, tmp_path)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode != 0, "a reader of a killed writer must fail, not end its pack early"
    assert b"cut short" in err
    direct = subprocess.run(args, input=request, cwd=big, env=git_env, capture_output=True, check=True).stdout
    assert len(out) < len(direct)
    assert not list(cache.glob("*.pack"))
    # The next identical fetch writes the entry anew, whole.
    _assert_the_next_fetch_is_whole(cache, args, request, big, work, git_env)


def test_the_cache_stays_within_its_bound_and_keeps_no_pack_larger_than_it(
        origin: Path, tmp_path: Path, git_env: dict[str, str]) -> None:
    requests = [record(origin, tmp_path, git_env, *options)
                for options in [("--depth", "1"), ("--filter=blob:none",), ("--depth", "1", "--branch", "v1"), ()]]
    sizes = [len(subprocess.run(args, input=req, cwd=origin, env=git_env, capture_output=True, check=True).stdout)
             for args, req in requests]
    bound = sorted(sizes)[-2] + 10  # the largest alone does not fit
    cache = tmp_path / "cache"
    for args, req in requests * 2:
        subprocess.run([*hook(cache, max_bytes=bound), *args], input=req, cwd=origin, env=git_env,
                       capture_output=True, check=True)
        assert packcache.stored_bytes(cache) <= bound
    assert max(sizes) not in [p.stat().st_size for p in cache.glob("*.pack")]


def test_a_pack_past_its_age_is_made_anew(origin: Path, tmp_path: Path, git_env: dict[str, str]) -> None:
    args, request = record(origin, tmp_path, git_env)
    cache = tmp_path / "cache"
    run = [*hook(cache, max_age=60), *args]
    subprocess.run(run, input=request, cwd=origin, env=git_env, capture_output=True, check=True)
    (pack,) = cache.glob("*.pack")
    os.utime(pack, (time.time() - 120, time.time() - 120))
    subprocess.run(run, input=request, cwd=origin, env=git_env, capture_output=True, check=True)
    assert packcache.counter(cache, packcache.MISSES) == 2


def test_the_same_request_to_another_repository_is_another_entry(origin: Path, tmp_path: Path,
                                                                 git_env: dict[str, str]) -> None:
    # Tenants never share packs: the repository's path is part of the key.
    other = tmp_path / "other.git"
    git("clone", "-q", "--bare", str(origin), str(other), cwd=tmp_path, env=git_env)
    args, request = record(origin, tmp_path, git_env)
    cache = tmp_path / "cache"
    for repo in (origin, other):
        subprocess.run([*hook(cache), *args], input=request, cwd=repo, env=git_env, capture_output=True, check=True)
    assert packcache.counter(cache, packcache.MISSES) == 2


def test_a_new_tag_changes_the_key_of_a_fetch_that_includes_tags(origin: Path, tmp_path: Path,
                                                                 git_env: dict[str, str]) -> None:
    args, request = record(origin, tmp_path, git_env, have=True)  # a fetch: it asks for tags along
    assert packcache.INCLUDE_TAG in args
    before = packcache.request_key(origin, args[1:], request)
    git("tag", "-a", "-m", "v2", "v2", "main", cwd=origin, env=git_env)
    assert packcache.request_key(origin, args[1:], request) != before


def test_without_a_usable_cache_directory_the_fetch_still_works(origin: Path, tmp_path: Path,
                                                                git_env: dict[str, str]) -> None:
    args, request = record(origin, tmp_path, git_env)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    result = subprocess.run([*hook(blocked / "cache"), *args], input=request, cwd=origin, env=git_env,
                            capture_output=True)
    assert result.returncode == 0 and result.stdout.startswith(b"PACK"), result.stderr


def _big_repository(tmp_path: Path, git_env: dict[str, str]) -> tuple[Path, Path]:
    big = tmp_path / "big.git"
    git("init", "-q", "--bare", "-b", "main", str(big), cwd=tmp_path, env=git_env)
    work = tmp_path / "w"
    git("clone", "-q", str(big), str(work), cwd=tmp_path, env=git_env)
    for n in range(40):
        (work / f"r{n}.bin").write_bytes(os.urandom(250_000))
    git("add", "-A", cwd=work, env=git_env)
    git("commit", "-q", "-m", "big", cwd=work, env=git_env)
    git("push", "-q", "origin", "main", cwd=work, env=git_env)
    return big, work


def _assert_the_next_fetch_is_whole(cache: Path, args: list[str], request: bytes, repo: Path, work: Path,
                                    env: dict[str, str]) -> None:
    """The next identical fetch writes the entry anew, whole."""
    again = subprocess.run([*hook(cache), *args], input=request, cwd=repo, env=env, capture_output=True,
                           check=True).stdout
    verified = subprocess.run(["git", "index-pack", "--stdin", "--fix-thin"], input=again, cwd=work, env=env,
                              capture_output=True)
    assert verified.returncode == 0, verified.stderr
    assert len(list(cache.glob("*.pack"))) == 1


def _writer_and_follower(cache: Path, args: list[str], request: bytes, repo: Path, env: dict[str, str],
                         tmp_path: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A writer that has sent the first bytes of its pack (its client reads no more for now), and
    a reader of the same request that has joined it."""
    writer = subprocess.Popen([*hook(cache), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=repo, env=env, start_new_session=True)
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(request)
    writer.stdin.close()
    assert writer.stdout.read(4096).startswith(b"PACK")  # it has started to pack
    (tmp_path / "request").write_bytes(request)
    with open(tmp_path / "request", "rb") as stdin:
        reader = subprocess.Popen([*hook(cache), *args], stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, cwd=repo, env=env)
    deadline = time.monotonic() + 30
    while packcache.counter(cache, packcache.HITS) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return writer, reader


# pack-objects that has written the first 100 kB of its pack and then waits, so that the kill
# always lands mid-pack (a real pack-objects of a test repository may be done before it).
STALLED_PACK_OBJECTS = """#!/bin/sh
if [ "$1" = pack-objects ]; then
  @GIT@ "$@" | head -c 100000
  exec sleep 60
fi
exec @GIT@ "$@"
"""


def test_pack_objects_killed_while_it_writes_the_part_file_fails_the_fetch_and_its_readers(
        tmp_path: Path, git_env: dict[str, str]) -> None:
    """On a miss pack-objects writes its --stdout straight into the part file; kill -9 of
    pack-objects itself (not of the hook) must fail the writer's own fetch and its follower,
    leave no pack, and let the next fetch write the entry whole. The killed pack-objects is a
    wrapper (STALLED_PACK_OBJECTS) that stops mid-pack, so the kill cannot come after its end."""
    big, work = _big_repository(tmp_path, git_env)
    args, request = record(big, tmp_path, git_env)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(STALLED_PACK_OBJECTS.replace("@GIT@", shutil.which("git") or "git"))
    (fake / "git").chmod(0o755)
    stalled = {**git_env, "PATH": f"{fake}:{git_env.get('PATH', os.environ['PATH'])}"}
    cache = tmp_path / "cache"
    writer, reader = _writer_and_follower(cache, args, request, big, stalled, tmp_path)
    assert writer.stdout is not None
    [pack_objects] = [int(pid) for pid in Path(f"/proc/{writer.pid}/task/{writer.pid}/children").read_text().split()]
    os.kill(pack_objects, signal.SIGKILL)
    writer.stdout.read()
    assert writer.wait(timeout=60) != 0, "the writer's own fetch must fail, not end its pack early"
    _out, err = reader.communicate(timeout=60)
    assert reader.returncode != 0 and b"cut short" in err
    assert not list(cache.glob("*.pack")) and not list(cache.glob("*.part"))
    _assert_the_next_fetch_is_whole(cache, args, request, big, work, git_env)


def test_a_client_that_leaves_mid_pack_still_leaves_a_whole_entry(tmp_path: Path, git_env: dict[str, str]) -> None:
    # The writer's client hangs up after the first bytes: pack-objects (writing the part file,
    # not the client's pipe) still finishes, and the entry is the whole pack.
    big, _work = _big_repository(tmp_path, git_env)
    args, request = record(big, tmp_path, git_env)
    env = {**git_env, **ONE_THREAD}
    cache = tmp_path / "cache"
    writer = subprocess.Popen([*hook(cache), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=big, env=env)
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(request)
    writer.stdin.close()
    assert writer.stdout.read(4096).startswith(b"PACK")
    writer.stdout.close()
    writer.wait(timeout=60)
    direct = subprocess.run(args, input=request, cwd=big, env=env, capture_output=True, check=True).stdout
    [pack] = cache.glob("*.pack")
    assert pack.read_bytes() == direct
