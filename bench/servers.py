"""The two servers under test — gitserver and plain OpenSSH ``sshd`` + git — started on free
loopback ports, each SSH daemon under a subreaper (:mod:`bench.reaper`), and /proc accounting
of a server's process tree."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SSHD = Path("/usr/sbin/sshd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TENANT = "bench"
USER = "bench"
# The account the OpenSSH baseline logs in as: its login shell is /bin/sh (dash on Debian),
# which reads no rc file when sshd runs a command with it, and its home is empty but for the
# .gitconfig git needs to serve repositories another user owns. Logging in as root instead
# would run root's bash, which reads ~/.bashrc on every connection (on these machines that
# runs `pyenv init`, ~90 ms) and makes the baseline look slower than it is.
BASELINE_USER = "gitbench"
BASELINE_SHELL = "/bin/sh"
# The change to asyncssh's send path prepared for upstream (docs/upstream/README.md); only
# ``--asyncssh-patch`` runs gitserver's SSH daemon with it, on a patched copy of asyncssh.
ASYNCSSH_PATCH = REPO_ROOT / "docs" / "upstream" / "asyncssh-send-path.patch"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ssh(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Poll until ``port`` answers with an SSH banner (no sleeps beyond the poll interval)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if sock.recv(8).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on port {port} within {timeout:.0f}s")


def patched_asyncssh(patch: Path, dest: Path) -> Path:
    """A copy of the installed asyncssh package under ``dest`` with ``patch`` applied
    (``patch -p1`` in the directory holding the package, no fuzz); returns ``dest``, the
    directory to put first on PYTHONPATH. The installed package itself is never touched.

    Raises RuntimeError, naming the patch and the asyncssh it was applied to, when the
    ``patch`` program is missing or the patch does not apply cleanly."""
    spec = importlib.util.find_spec("asyncssh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("asyncssh is not installed in this environment")
    source = Path(next(iter(spec.submodule_search_locations)))
    if shutil.which("patch") is None:
        raise RuntimeError(f"applying {patch.name} needs the patch program (apt-get install patch)")
    if not patch.is_file():
        raise RuntimeError(f"{patch}: no such patch file")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest / "asyncssh", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
                             "-i", str(patch)], cwd=dest, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{patch} does not apply to the asyncssh installed at {source}:\n"
                           + (result.stdout + result.stderr).strip())
    return dest


# --- /proc accounting ------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds including reaped children, rss bytes) of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17, rss=24
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), ticks / CLK_TCK, int(fields[21]) * PAGE


def _children(pid: int) -> list[int]:
    """The children of ``pid``."""
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and (st := _stat(int(e))) is not None and st[0] == pid]


def own_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` alone: its utime+stime, none of its children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree(root: int) -> dict[int, tuple[float, int]]:
    """{pid: (cpu seconds, rss bytes)} for ``root`` and all its descendants.

    CPU includes each process's reaped children (cutime/cstime): a git child that has exited
    and was waited for still counts, in its parent."""
    stats: dict[int, tuple[int, float, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu, _rss) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[float, int]] = {}
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        out[pid] = stats[pid][1:]
        todo.extend(children.get(pid, ()))
    return out


def _private(pid: int) -> int:
    """Resident bytes of ``pid`` that are not file-backed or shared (statm: resident - shared)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return (int(fields[1]) - int(fields[2])) * PAGE


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root``'s tree: the live processes and all they have reaped. Under
    :mod:`bench.reaper` that is every process the server has ever started."""
    return sum(cpu for cpu, _rss in tree(root).values())


def reaped(argv: list[str]) -> list[str]:
    """``argv`` run under the subreaper launcher."""
    return [sys.executable, "-m", "bench.reaper", *argv]


class Sampler:
    """Samples the summed RSS of a process tree (its root excepted) every ``interval`` seconds
    while active; also the peak of the daemon process alone (``daemon``) and the tree's peak
    private memory: RSS less the file-backed and shared pages (/proc/PID/statm), i.e. without
    git's mapped pack and the shared libraries, which the page cache holds once for everyone."""

    def __init__(self, root: int, interval: float = 0.02, daemon: int | None = None) -> None:
        self.root = root
        self.daemon = daemon
        self.interval = interval
        self.peak = 0
        self.daemon_peak = 0
        self.private_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # The root is the subreaper launcher, a measuring device, not part of the server.
            rss = tree(self.root)
            pids = [pid for pid in rss if pid != self.root]
            self.peak = max(self.peak, sum(rss[pid][1] for pid in pids))
            if self.daemon in rss:
                self.daemon_peak = max(self.daemon_peak, rss[self.daemon][1])
            self.private_peak = max(self.private_peak, sum(_private(pid) for pid in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the servers -----------------------------------------------------------------------------

@dataclasses.dataclass
class Server:
    """What a measurement needs from either server."""

    name: str
    port: int
    user: str
    proc: subprocess.Popen[bytes] | None = None

    def url(self, repo: str) -> str:
        raise NotImplementedError

    def push_url(self, repo: str) -> str:
        return self.url(repo)

    @property
    def accounting_root(self) -> int:
        """The pid whose process tree does this server's SSH and git work (the subreaper)."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def daemon_pid(self) -> int:
        """The SSH daemon itself: the subreaper's only long-lived child (``gitserver ssh``, or
        the listening sshd), whose own CPU (not its children's) a row may show apart."""
        assert self.proc is not None
        cached = self.__dict__.get("_daemon")
        if cached and Path(f"/proc/{cached}").exists():
            return int(cached)
        children = _children(self.proc.pid)
        if len(children) == 1:
            self.__dict__["_daemon"] = children[0]
            return children[0]
        raise RuntimeError(f"{self.name}: the daemon under the subreaper is gone")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class GitServer(Server):
    """gitserver with SQLite in ``root``; the benchmark talks to its database in-process.

    The three parts ``gitserver serve`` would supervise run as separate processes, the SSH
    daemon under the subreaper, so that its tree (every git and hook it starts) is what is
    measured, and the API and the pipeline worker are not.

    With ``asyncssh_path``, that directory comes first on the SSH daemon's PYTHONPATH (and
    only the daemon's): the daemon runs on the asyncssh found there (:func:`patched_asyncssh`)."""

    def __init__(self, root: Path, asyncssh_path: Path | None = None) -> None:
        super().__init__(name="gitserver", port=free_port(), user="git")
        self.root = root
        self.asyncssh_path = asyncssh_path
        self.data_dir = root / "data"
        self.env = {
            # Its own metrics directory (in the data dir), never the caller's.
            **{k: v for k, v in os.environ.items()
               if not k.startswith("GITSERVER_") and k != "PROMETHEUS_MULTIPROC_DIR"},
            "GITSERVER_DATA_DIR": str(self.data_dir),
            "GITSERVER_DATABASE_URL": f"sqlite:///{self.data_dir / 'gitserver.db'}",
            "GITSERVER_SSH_HOST": "127.0.0.1",
            "GITSERVER_SSH_PORT": str(self.port),
            "GITSERVER_HTTP_HOST": "127.0.0.1",
            "GITSERVER_HTTP_PORT": str(free_port()),
            "GITSERVER_WORKERS": "1",
            "GITSERVER_HTTP_WORKERS": "1",
            "GITSERVER_JOB_POLL_INTERVAL": "0.2",
        }
        self._runtime: Any = None

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "gitserver", *args], env=self.env, text=True,
                                capture_output=True, cwd=REPO_ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"gitserver {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def start(self) -> None:
        self.cli("init")
        self.others: list[subprocess.Popen[bytes]] = []
        for part in ("ssh", "worker", "api"):
            log = open(self.root / f"{part}.log", "ab")  # noqa: SIM115
            argv = [sys.executable, "-m", "gitserver", part]
            env = self.ssh_env() if part == "ssh" else self.env
            proc = subprocess.Popen(reaped(argv) if part == "ssh" else argv, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
            log.close()
            if part == "ssh":
                self.proc = proc
            else:
                self.others.append(proc)
        assert self.proc is not None
        wait_for_ssh(self.port, self.proc, "gitserver ssh")

    @property
    def api_pid(self) -> int:
        """The API's process (gunicorn's arbiter; its tree holds the worker)."""
        return self.others[-1].pid

    def ssh_env(self) -> dict[str, str]:
        """The SSH daemon's environment: :attr:`env`, with :attr:`asyncssh_path` first on
        PYTHONPATH when there is one, checked to be the asyncssh the daemon will import."""
        if self.asyncssh_path is None:
            return self.env
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.asyncssh_path), env.get("PYTHONPATH")) if p)
        found = subprocess.run([sys.executable, "-c", "import asyncssh; print(asyncssh.__file__)"], env=env,
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        if not Path(found).is_relative_to(self.asyncssh_path):
            raise RuntimeError(f"the SSH daemon would import asyncssh from {found or 'nowhere'}, "
                               f"not from {self.asyncssh_path}")
        return env

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['GITSERVER_HTTP_PORT']}"

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            from gitserver import config
            from gitserver.runtime import Runtime

            self._runtime = Runtime.create(config.load(environ=self.env), pool_size=1)
        return self._runtime

    @contextlib.contextmanager
    def db(self) -> Any:
        from gitserver.db.session import transaction

        with transaction(self.runtime.sessions) as session:
            yield session

    def url(self, repo: str) -> str:
        return f"ssh://git@127.0.0.1:{self.port}/{TENANT}/{repo}.git"

    def repo_path(self, repo: str) -> Path:
        return self.data_dir / "repos" / TENANT / f"{repo}.git"

    def stop(self) -> None:
        super().stop()
        for proc in getattr(self, "others", []):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._runtime is not None:
            self._runtime.dispose()


class Profiler:
    """py-spy sampling one process (the gitserver SSH daemon) until stopped; writes collapsed
    stacks (``--format raw``), which :func:`top_frames` summarises."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        py_spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--rate", "200",
                                      "--nonblocking", "--format", "raw", "--output", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def top_frames(collapsed: Path, n: int = 25) -> str:
    """The frames where the most samples were taken: self (leaf) and total (anywhere on the
    stack), as a plain-text table."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + int(count)
    lines = [f"{samples} samples", "", "self %  frame"]
    lines += [f"{100 * c / samples:6.1f}  {f}" for f, c in sorted(own.items(), key=lambda x: -x[1])[:n]]
    lines += ["", "total %  frame"]
    lines += [f"{100 * c / samples:6.1f}  {f}" for f, c in sorted(total.items(), key=lambda x: -x[1])[:n]]
    return "\n".join(lines) + "\n"


SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {root}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AcceptEnv GIT_PROTOCOL
PrintMotd no
UseDNS no
# The default (10:30:100) randomly drops unauthenticated connections beyond 10: a tuned server
# raises it, as gitserver's own connection cap is 500.
MaxStartups 200
MaxSessions 10
LogLevel ERROR
"""


def baseline_account(home: Path) -> tuple[str, str]:
    """The login the OpenSSH baseline uses, and why: :data:`BASELINE_USER` with an empty
    ``home``, created (or pointed at ``home``) when we are root; else the current user, whose
    shell may read rc files (the report says so)."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() != 0:
        return me, f"{me} (not root: could not create {BASELINE_USER}; its shell may read rc files)"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    try:
        pwd.getpwnam(BASELINE_USER)
        subprocess.run(["usermod", "--home", str(home), "--shell", BASELINE_SHELL, "--password", "*",
                        BASELINE_USER], check=True)
    except KeyError:
        # Password "*": no password login, but not a locked account, which sshd (without
        # PAM) would refuse even for a key.
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                        "--shell", BASELINE_SHELL, "--password", "*", BASELINE_USER], check=True)
    entry = pwd.getpwnam(BASELINE_USER)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return BASELINE_USER, f"{BASELINE_USER} (login shell {BASELINE_SHELL}, empty home: no rc file read)"


class OpenSSHServer(Server):
    """OpenSSH ``sshd`` (as root, under the subreaper) with its own config, host key and
    authorized_keys in ``root``; clients log in as :data:`BASELINE_USER`.

    Clones read the very repositories gitserver serves (by absolute path; the baseline user's
    .gitconfig lists them as ``safe.directory``); pushes go to plain bare repositories under
    ``root/plain``, owned by the baseline user (gitserver's hooks need its environment)."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        super().__init__(name="openssh", port=free_port(), user="root")
        self.root = root
        self.data_dir = data_dir
        self.plain = root / "plain"
        self.home = root / "home"
        self.authorized_keys = root / "authorized_keys"
        self.login_note = ""

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.user, self.login_note = baseline_account(self.home)
        self.plain.mkdir(exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        cfg = self.root / "sshd_config"
        cfg.write_text(SSHD_CONFIG.format(port=self.port, root=self.root))
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(reaped([str(SSHD), "-D", "-e", "-f", str(cfg)]), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_ssh(self.port, self.proc, "sshd")

    def hand_over(self, served: list[Path]) -> None:
        """Give the baseline user its plain repositories and a .gitconfig naming ``served``
        (owned by gitserver) as safe, once all of them exist."""
        if self.user != BASELINE_USER:
            return
        entry = pwd.getpwnam(BASELINE_USER)
        # sshd reads authorized_keys as the user and git runs as the user: every directory
        # from the work directory down to the repositories must be readable by it.
        work = self.root.parent
        for path in {self.root, *(q for p in served for q in (p, *p.parents) if q.is_relative_to(work))}:
            path.chmod(path.stat().st_mode | 0o055)
        gitconfig = self.home / ".gitconfig"
        gitconfig.write_text("[safe]\n" + "".join(f"\tdirectory = {p}\n" for p in served))
        os.chown(gitconfig, entry.pw_uid, entry.pw_gid)
        subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(self.plain)], check=True)
        os.chmod(self.authorized_keys, 0o644)

    def url(self, repo: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.repo_path(repo)}"

    def repo_path(self, repo: str) -> Path:
        return self.data_dir / "repos" / TENANT / f"{repo}.git"

    def push_url(self, repo: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.plain}/{repo}.git"

    def plain_repo(self, repo: str) -> Path:
        return self.plain / f"{repo}.git"
