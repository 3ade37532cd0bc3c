"""The pre-receive hook asks the process that started git to check the push limits.

The installed hook script (gitserver/hooks/pre-receive, run by bash) gets a real quarantine
directory written by git and a socket served by :class:`gitserver.push.ledger.HookService`
in a thread, exactly as the SSH daemon serves it. It must give the same answers as the Python
check, start no Python when the daemon answers, fall back to the Python check whenever the
daemon cannot answer, and leave the socket clean for proc-receive. The limits op touches no
database, so the service here has none (the SSH tests in test_limits.py run it for real).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gitserver.git import store
from gitserver.push import admission, ledger, limits
from gitserver.push.ledger import PushContext

PROC_RECEIVE = "'receive.procReceiveRefs'='refs/'"
BLOB = b"eleven byte"  # 11 bytes
Z, A = "0" * 40, "a" * 40
MAIN = f"{Z} {A} refs/heads/main\n"  # what git gives the hook: one line per ref
RESERVED = "this name is reserved for gitserver archives"


class Repo(NamedTuple):
    path: Path
    quarantine: Path
    oid: str


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str]) -> Repo:
    path = tmp_path / "acme" / "widgets.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], env=git_env, check=True)
    quarantine = path / "objects" / "tmp_objdir-incoming-Ab12_x"
    quarantine.mkdir()
    oid = subprocess.run(["git", "hash-object", "-w", "--stdin"], input=BLOB, capture_output=True, check=True,
                         env={**git_env, "GIT_DIR": str(path), "GIT_OBJECT_DIRECTORY": str(quarantine)}
                         ).stdout.decode().strip()
    return Repo(path, quarantine, oid)


def install(hooks_dir: Path, python: str) -> Path:
    store.install_hooks(hooks_dir, hooks_dir.parent / "data", python=python)
    return hooks_dir / "pre-receive"


@pytest.fixture
def no_python(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The hook installed with an "interpreter" that only leaves a mark: proves Python was not
    started (the real fallback is tested with the real interpreter below)."""
    mark = tmp_path / "python-started"
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\ntouch {mark}\nexit 3\n")
    fake.chmod(0o755)
    yield install(tmp_path / "hooks-fake", str(fake)), mark


class Served(NamedTuple):
    fd: int  # the hook's end
    requests: list[Any]


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a HookService on a socket pair; the hook gets the child end."""
    opened: list[socket.socket] = []

    def start(check: limits.QuarantineCheck | None, *, daemon_gone: bool = False, can_write: bool = True) -> Served:
        parent, child = socket.socketpair()
        opened.append(child)
        service = ledger.HookService(None, PushContext(repo_id=1), "http://gitserver.invalid",  # type: ignore[arg-type]
                                     push_check=check, can_write=can_write)
        requests: list[Any] = []
        handle = service.handle

        def recording(request: Any, trust_push_ids: bool = False) -> dict[str, object]:
            requests.append(request)
            return handle(request, trust_push_ids)

        service.handle = recording  # type: ignore[method-assign]
        if daemon_gone:
            parent.close()
        else:
            threading.Thread(target=ledger.serve_hook_socket, args=(parent, service), daemon=True).start()
        return Served(child.fileno(), requests)

    yield start
    for sock in opened:
        sock.close()


def run_hook(hook: Path, repo: Repo, fd: int | None, limit: int, updates: str = MAIN,
             permission: str = "write") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "GIT_DIR": str(repo.path), "GIT_CONFIG_PARAMETERS": PROC_RECEIVE,
           "GIT_QUARANTINE_PATH": str(repo.quarantine), "GITSERVER_REPO": "acme/widgets",
           "GITSERVER_PERMISSION": permission, **limits.PushLimits(max_blob_bytes=limit).to_env()}
    if fd is not None:
        env["GITSERVER_HOOK_FD"] = str(fd)
    return subprocess.run([str(hook)], env=env, cwd=repo.path, input=updates, text=True,
                          capture_output=True, timeout=60, pass_fds=() if fd is None else (fd,))


def refusal(repo: Repo, limit: int) -> str:
    return (f"error: push refused: GITSERVER_MAX_BLOB_BYTES is {limit} bytes; blob {repo.oid} is "
            f"{len(BLOB)} bytes\n")


def check(repo: Repo) -> limits.QuarantineCheck:
    return limits.QuarantineCheck(limits.PushLimits(max_blob_bytes=10), repo.path, "acme/widgets")


def unread(fd: int) -> bytes:
    """What is left on the hook's end of the socket for proc-receive (must be nothing)."""
    sock = socket.socket(fileno=os.dup(fd))
    with sock:
        sock.setblocking(False)
        try:
            return sock.recv(100)
        except BlockingIOError:
            return b""


def test_the_daemon_refuses_and_no_python_starts(repo: Repo, no_python: tuple[Path, Path], serve: Any) -> None:
    hook, mark = no_python
    served = serve(check(repo))
    result = run_hook(hook, repo, served.fd, 10)
    assert (result.returncode, result.stderr) == (1, refusal(repo, 10))
    assert served.requests == [{"op": "pre-receive", "quarantine": repo.quarantine.name,
                                "updates": [[Z, A, "refs/heads/main"]]}]
    assert not mark.exists()
    assert unread(served.fd) == b""


def test_the_daemon_accepts_and_no_python_starts(repo: Repo, no_python: tuple[Path, Path], serve: Any) -> None:
    hook, mark = no_python
    ok = limits.QuarantineCheck(limits.PushLimits(max_blob_bytes=11), repo.path, "acme/widgets")
    served = serve(ok)
    result = run_hook(hook, repo, served.fd, 11)
    assert (result.returncode, result.stderr) == (0, "")
    assert len(served.requests) == 1 and not mark.exists()
    assert unread(served.fd) == b""


@pytest.mark.parametrize("case", ["daemon gone", "no socket", "service without limits"])
def test_the_python_check_runs_when_the_daemon_cannot_answer(repo: Repo, tmp_path: Path, serve: Any,
                                                             case: str) -> None:
    """The fallback is the real Python hook: same message, same exit status."""
    hook = install(tmp_path / "hooks", sys.executable)
    if case == "no socket":
        fd = None
    else:
        fd = serve(None if case == "service without limits" else check(repo),
                   daemon_gone=case == "daemon gone").fd
    result = run_hook(hook, repo, fd, 10)
    assert (result.returncode, result.stderr) == (1, refusal(repo, 10))


def test_the_daemon_measures_only_a_quarantine_of_its_repository(repo: Repo, no_python: tuple[Path, Path],
                                                                 serve: Any, tmp_path: Path) -> None:
    """A quarantine the daemon cannot find under the repository's objects/ is an error reply,
    and the hook then runs the Python check (here: the fake interpreter, exit 3)."""
    hook, mark = no_python
    other = tmp_path / "elsewhere" / "objects" / "tmp_objdir-incoming-zz"
    other.mkdir(parents=True)
    served = serve(check(repo))
    result = run_hook(hook, repo._replace(quarantine=other), served.fd, 10)
    assert result.returncode == 3 and mark.exists()
    assert unread(served.fd) == b""


def test_the_daemon_refuses_reserved_names_whole_and_no_python_starts(repo: Repo, no_python: tuple[Path, Path],
                                                                      serve: Any) -> None:
    """One line per ref, each naming it; the accepted-looking branch is named as not updated."""
    hook, mark = no_python
    served = serve(check(repo))
    result = run_hook(hook, repo, served.fd, 0, updates=MAIN + f"{Z} {A} refs/tags/repour-x\n")
    assert result.returncode == 1
    assert result.stderr == (f"error: refs/heads/main: {admission.NOT_UPDATED}\n"
                             f"error: refs/tags/repour-x: {RESERVED}\n")
    assert not mark.exists()
    assert unread(served.fd) == b""


@pytest.mark.parametrize("python", ["daemon", "fallback"])
def test_a_reader_is_refused_whole(repo: Repo, no_python: tuple[Path, Path], serve: Any, tmp_path: Path,
                                   python: str) -> None:
    """The daemon decides from the permission it authorised, the Python check from the hook's
    environment: the same answer."""
    fake, mark = no_python
    hook = fake if python == "daemon" else install(tmp_path / "hooks", sys.executable)
    fd = serve(check(repo), can_write=False).fd if python == "daemon" else None
    result = run_hook(hook, repo, fd, 0, permission="read")
    assert (result.returncode, result.stderr) == (1, "error: refs/heads/main: you do not have write permission\n")
    assert not mark.exists()


def test_a_ref_name_bash_does_not_quote_goes_to_python(repo: Repo, tmp_path: Path, serve: Any) -> None:
    """A ref name with a double quote is not sent to the daemon; the Python check gets the
    refs from the hook (which has read them already) and answers the same way."""
    hook = install(tmp_path / "hooks", sys.executable)
    served = serve(check(repo))
    result = run_hook(hook, repo, served.fd, 0, updates=f'{Z} {A} refs/tags/repour-"x\n')
    assert (result.returncode, result.stderr) == (1, f'error: refs/tags/repour-"x: {RESERVED}\n')
    assert served.requests == []
