"""Container entrypoint: identity for an arbitrary UID, PID 1 duties, signal forwarding.

``python -m gitserver.cmd.entrypoint [serve|ssh|api|worker|<command> ...]`` (default ``serve``);
``python -m gitserver.cmd.entrypoint healthcheck`` is the image's HEALTHCHECK.

* OpenShift runs the image under a random UID with no ``/etc/passwd`` entry; git and ssh
  both look the user up (``getpwuid``) and fail without one. When the UID is unknown we
  write a passwd and group file into ``GITSERVER_NSS_DIR`` (default ``/tmp/gitserver-nss``)
  and preload nss_wrapper (Debian ``libnss-wrapper``) for the child; without the library,
  we append to ``/etc/passwd`` if it is writable (the ``chmod g=u /etc/passwd`` recipe).
* As PID 1 (or as a child subreaper anywhere else) we reap every orphan that is re-parented
  to us, so exited git and hook processes never pile up as zombies.
* SIGTERM, SIGINT, SIGHUP and SIGQUIT go to the child; we exit with its status.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PARTS = ("serve", "ssh", "api", "worker")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
NSS_WRAPPER_LIBS = ("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
                    "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so", "/usr/lib/libnss_wrapper.so")
PR_SET_CHILD_SUBREAPER = 36
USER_NAME = "gitserver"


def passwd_line(uid: int, gid: int, home: str, name: str = USER_NAME) -> str:
    """An ``/etc/passwd`` line for ``uid`` (pure)."""
    return f"{name}:x:{uid}:{gid}:gitserver:{home}:/bin/sh\n"


def group_line(gid: int, name: str = USER_NAME) -> str:
    return f"{name}:x:{gid}:\n"


def command_for(argv: Sequence[str]) -> list[str]:
    """What to run: a gitserver part (default ``serve``) or the command given (pure)."""
    if not argv:
        argv = ["serve"]
    if argv[0] in PARTS:
        return [sys.executable, "-m", "gitserver", *argv]
    return list(argv)


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def identity_env(environ: Mapping[str, str], uid: int, gid: int) -> dict[str, str]:
    """Environment additions that give ``uid`` a passwd entry (empty when it has one)."""
    home = environ.get("HOME") or "/var/lib/gitserver"
    if _uid_known(uid):
        return {}
    env = {"HOME": home, "USER": USER_NAME, "LOGNAME": USER_NAME}
    library = next((lib for lib in NSS_WRAPPER_LIBS if os.path.exists(lib)), None)
    if library is None and os.access("/etc/passwd", os.W_OK):
        with open("/etc/passwd", "a", encoding="utf-8") as fh:
            fh.write(passwd_line(uid, gid, home))
        return env
    if library is None:
        log.warning("uid %d has no passwd entry and nss_wrapper is not installed; "
                    "git and ssh may refuse to run", uid)
        return env
    nss_dir = Path(environ.get("GITSERVER_NSS_DIR") or "/tmp/gitserver-nss")
    nss_dir.mkdir(parents=True, exist_ok=True)
    passwd, group = nss_dir / "passwd", nss_dir / "group"
    # Keep the system's entries (root, nobody...) so other lookups still resolve.
    passwd.write_text(Path("/etc/passwd").read_text(encoding="utf-8") + passwd_line(uid, gid, home),
                      encoding="utf-8")
    group_text = Path("/etc/group").read_text(encoding="utf-8")
    if not any(line.split(":")[2:3] == [str(gid)] for line in group_text.splitlines()):
        group_text += group_line(gid)
    group.write_text(group_text, encoding="utf-8")
    preload = " ".join(filter(None, [environ.get("LD_PRELOAD", ""), library]))
    env.update(NSS_WRAPPER_PASSWD=str(passwd), NSS_WRAPPER_GROUP=str(group), LD_PRELOAD=preload)
    return env


def become_subreaper() -> bool:
    """Have orphans re-parented to us even when we are not PID 1 (Linux only)."""
    if os.getpid() == 1:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def supervise(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command``, forward signals to it, reap everything; return its exit status."""
    child = os.posix_spawn(command[0] if os.path.isabs(command[0]) else _which(command[0], env),
                           list(command), dict(env))

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    status = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = os.waitstatus_to_exitcode(wait_status)
            status = 128 - status if status < 0 else status
            break
    _reap_remaining()
    return status


def _reap_remaining() -> None:
    """Collect orphans that already exited; the container's stop kills what still runs."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _which(name: str, env: Mapping[str, str]) -> str:
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(f"entrypoint: command not found: {name}")


def running_part(cmdline_path: str = "/proc/1/cmdline") -> str:
    """Which gitserver part the container runs, from PID 1's command line."""
    try:
        args = Path(cmdline_path).read_bytes().split(b"\0")
    except OSError:
        return "serve"
    return next((a.decode() for a in args[1:] if a.decode() in PARTS), "serve")


def healthcheck(part: str, host: str, http_port: int, ssh_port: int, timeout: float = 3.0) -> int:
    """0 when the part answers: ``/healthz`` for serve/api, the SSH banner for ssh."""
    import socket
    import urllib.request

    host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    try:
        if part in ("serve", "api"):
            url_host = f"[{host}]" if ":" in host else host
            with urllib.request.urlopen(f"http://{url_host}:{http_port}/healthz", timeout=timeout) as r:
                return 0 if r.status == 200 else 1
        if part == "ssh":
            with socket.create_connection((host, ssh_port), timeout=timeout) as sock:
                return 0 if sock.recv(64).startswith(b"SSH-2.0-") else 1
    except OSError as exc:
        print(f"unhealthy: {part}: {exc}", file=sys.stderr)
        return 1
    return 0  # a worker has no port; the container engine already watches PID 1


def _healthcheck_main() -> int:
    from gitserver import config

    cfg = config.load()
    part = running_part()
    host = cfg.ssh_host if part == "ssh" else cfg.http_host
    return healthcheck(part, host, cfg.http_port, cfg.ssh_port)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["healthcheck"]:
        return _healthcheck_main()
    logging.basicConfig(level=logging.INFO, format="entrypoint: %(message)s")
    env = dict(os.environ)
    env.update(identity_env(env, os.getuid(), os.getgid()))
    become_subreaper()
    return supervise(command_for(args), env)


if __name__ == "__main__":
    sys.exit(main())
