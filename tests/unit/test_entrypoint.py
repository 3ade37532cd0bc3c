"""The container entrypoint, run as a real process.

The arbitrary-UID test needs root (to start a process under an unknown UID) and runs the
entrypoint with the system python, because the venv's interpreter lives under /root; the
entrypoint uses only the standard library for exactly this reason (it runs before anything
else in the image).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from gitserver.cmd import entrypoint

ENTRYPOINT = str(Path(entrypoint.__file__))
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
ARBITRARY_UID = 1000570000  # an OpenShift-style UID with no passwd entry


def test_command_for_parts_and_other_commands() -> None:
    assert entrypoint.command_for([]) == [sys.executable, "-m", "gitserver", "serve"]
    assert entrypoint.command_for(["worker", "--concurrency", "2"])[-3:] == ["worker", "--concurrency", "2"]
    assert entrypoint.command_for(["sh", "-c", "true"]) == ["sh", "-c", "true"]


def test_passwd_line() -> None:
    assert entrypoint.passwd_line(1000570000, 0, "/var/lib/gitserver") == \
        "gitserver:x:1000570000:0:gitserver:/var/lib/gitserver:/bin/sh\n"


@pytest.mark.skipif(os.getuid() != 0 or not SYSTEM_PYTHON or not any(
    os.path.exists(lib) for lib in entrypoint.NSS_WRAPPER_LIBS),
    reason="needs root, /usr/bin/python3 and libnss-wrapper")
def test_arbitrary_uid_gets_a_passwd_entry_git_and_ssh_see() -> None:
    base = Path(tempfile.mkdtemp(prefix="gitserver-ep-"))
    try:
        base.chmod(0o777)
        home = base / "home"
        home.mkdir()
        home.chmod(0o777)
        nss = base / "nss"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "GITSERVER_NSS_DIR": str(nss),
               "GIT_COMMITTER_EMAIL": "ops@example.org"}
        script = 'id -un; echo "$HOME"; git var GIT_COMMITTER_IDENT | cut -d" " -f1; ssh -G x | grep "^user "'
        out = subprocess.run([SYSTEM_PYTHON, ENTRYPOINT, "sh", "-c", script], env=env,
                             user=ARBITRARY_UID, group=0, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "gitserver"
        assert lines[1] == str(home)
        assert lines[2] == "gitserver"  # git found a user name (it refuses without one)
        assert lines[3] == "user gitserver"
        passwd = (nss / "passwd").read_text()
        assert f"gitserver:x:{ARBITRARY_UID}:0:gitserver:{home}:/bin/sh\n" in passwd
        assert passwd.startswith("root:")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_known_uid_needs_nothing() -> None:
    assert entrypoint.identity_env({"HOME": "/x"}, os.getuid(), os.getgid()) == {}


ORPHAN_MAKER = textwrap.dedent("""
    import os, sys, time
    # Double fork: the middle process exits at once, so the grandchild becomes an orphan
    # (re-parented to the entrypoint, a subreaper) and exits 0.5s later.
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            time.sleep(0.5)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
    print(os.getpid(), flush=True)
""")



def _zombies_under(pid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] == "Z":
            found.append(entry.name)
    return found


def _children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_orphan_exit_leaves_no_zombie_while_child_runs() -> None:
    proc = subprocess.Popen([sys.executable, ENTRYPOINT, sys.executable, "-c",
                             ORPHAN_MAKER + "time.sleep(5)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())  # type: ignore[union-attr]
        adopted = [c for c in _children_of(proc.pid) if c != child]
        assert adopted, "the orphan was re-parented to the entrypoint"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(c != child for c in _children_of(proc.pid)):
            time.sleep(0.05)
        # Reaped: neither a running nor a zombie orphan is left, the main child runs on.
        assert [c for c in _children_of(proc.pid) if c != child] == []
        assert _zombies_under(proc.pid) == []
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_sigterm_is_forwarded_and_status_returned() -> None:
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, ENTRYPOINT, sys.executable, "-c", script],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert time.monotonic() - start < 5


def test_child_killed_by_signal_maps_to_128_plus_signal() -> None:
    out = subprocess.run([sys.executable, ENTRYPOINT, "sh", "-c", "kill -KILL $$"], timeout=10)
    assert out.returncode == 128 + signal.SIGKILL


# --- The deployment files shipped next to the entrypoint (etc/) ---------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_documents_every_setting_and_loads() -> None:
    import dataclasses
    import tomllib

    from gitserver import config

    example = ROOT / "etc" / "gitserver.toml.example"
    keys = set(config._flatten(tomllib.loads(example.read_text())))
    fields = {f.name for f in dataclasses.fields(config.Config)}
    assert fields - keys == set(), "settings missing from etc/gitserver.toml.example"
    assert keys - fields == set()
    loaded = config.load(example, environ={})
    defaults = config.Config()
    # The example shows the defaults, so reading it tells an operator what they get.
    assert [f for f in fields if getattr(loaded, f) != getattr(defaults, f)] == ["data_dir"]
    assert loaded.data_dir == Path("/var/lib/gitserver")


UNITS = ("gitserver.service", "gitserver-ssh.service", "gitserver-api.service",
         "gitserver-worker.service")


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_is_hardened(unit: str) -> None:
    text = (ROOT / "etc" / "systemd" / unit).read_text()
    for line in ("User=gitserver", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/gitserver", "PrivateTmp=yes", "KillSignal=SIGTERM"):
        assert line in text.splitlines(), f"{unit} lacks {line}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists; point it at /bin/true for the check.
    for unit in UNITS:
        text = (ROOT / "etc" / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/gitserver/venv/bin/gitserver", "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in UNITS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_running_part_reads_pid1_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"python\0-m\0gitserver.entrypoint\0worker\0")
    assert entrypoint.running_part(str(cmdline)) == "worker"
    cmdline.write_bytes(b"python\0-m\0gitserver.entrypoint\0")
    assert entrypoint.running_part(str(cmdline)) == "serve"


def test_healthcheck_hits_healthz_and_reads_the_ssh_banner() -> None:
    import http.server
    import socket
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    banner = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = banner.accept()
        conn.sendall(b"SSH-2.0-gitserver\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        http_port, ssh_port = httpd.server_address[1], banner.getsockname()[1]
        assert entrypoint.healthcheck("api", "0.0.0.0", http_port, 1) == 0
        assert entrypoint.healthcheck("ssh", "127.0.0.1", 1, ssh_port) == 0
        assert entrypoint.healthcheck("worker", "127.0.0.1", 1, 1) == 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        assert entrypoint.healthcheck("serve", "127.0.0.1", closed, 1, timeout=1) == 1
    finally:
        httpd.shutdown()
        banner.close()


def test_gunicorn_conf_binds_where_the_config_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etc/gunicorn.conf.py runs the API as `gitserver api` does, from the gitserver settings."""
    import runpy

    monkeypatch.setenv("GITSERVER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GITSERVER_HTTP_HOST", "::1")
    monkeypatch.setenv("GITSERVER_HTTP_PORT", "18080")
    monkeypatch.setenv("GITSERVER_HTTP_WORKERS", "3")
    monkeypatch.setenv("GITSERVER_HTTP_HEADER_TIMEOUT", "7")
    conf = runpy.run_path(str(ROOT / "etc" / "gunicorn.conf.py"))
    assert conf["bind"] == "[::1]:18080"
    assert conf["workers"] == 3
    from gitserver.api.worker import HeadFirstWorker

    assert issubclass(conf["worker_class"], HeadFirstWorker)  # gthread, heads read by the event loop
    assert conf["worker_class"].header_timeout == 7.0
    assert callable(conf["child_exit"]) and callable(conf["on_starting"])
    assert conf["control_socket_disable"] is True  # one per user: replicas would share it
