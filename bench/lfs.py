"""Git LFS throughput: one large object through gitserver against the plain baselines, same run.

    .venv/bin/python -m bench.lfs [--mib 200] [--runs 3]

- HTTP download and upload of the object through gitserver's basic transfer (the batch API's
  action hrefs, on gunicorn) against nginx serving the same file from disk (GET) and taking it
  with WebDAV PUT, with the same Python client (requests, 1 MiB chunks) for both; these four
  alternate run by run too, with the CPU of this process (the client) and of the serving
  process tree (gitserver's API, or nginx's master and worker);
- pure-SSH download: ``git lfs fetch`` of the real git-lfs client, which speaks
  git-lfs-transfer to gitserver's SSH daemon, by default and with one transfer connection, and
  the protocol alone (``ssh … git-lfs-transfer`` fed a canned get-object, output to /dev/null),
  against ``scp -O`` of the same file from OpenSSH's sshd (its classic protocol: the baseline
  sshd has no SFTP subsystem). These four alternate run by run and also report the mean CPU of
  the client processes and of the serving SSH daemon's process tree: on a shared machine wall
  times move with its load, CPU much less.

``--http-only`` skips the SSH rows (the SSH push that stores the object still runs). Prints
one line per figure and the ratios (docs/benchmarks.md keeps the published ones). Needs
root for the OpenSSH baseline account (bench.servers), nginx and git-lfs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import requests

from bench.servers import GitServer, OpenSSHServer, free_port, tree_cpu

TENANT, USER = "bench", "bench"
MEDIA = "application/vnd.git-lfs+json"
CHUNK = 1024 * 1024
NGINX_CONF = """daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {root}/body;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    root {root}/files;
    location / {{ dav_methods PUT; create_full_put_path on; }}
  }}
}}
"""


class Timing(NamedTuple):
    wall: float  # the fastest run
    median: float  # the median run: a lucky fastest one can flatter either side
    client_cpu: float  # mean over the runs: the client (git, git-lfs, ssh, scp; or this process)
    server_cpu: float  # mean: the serving process tree (bench.servers.tree_cpu)


def _client_cpu() -> float:
    """This process (the HTTP rows' client) and its children (the SSH rows' clients)."""
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in used)


Row = tuple[Callable[[], None], Callable[[], int]]  # one run, and the pid of the tree serving it


def alternate(runs: int, rows: dict[str, Row]) -> dict[str, Timing]:
    """Each row once per round, ``runs`` rounds, so a change in the machine's load hits all."""
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, (once, serving) in rows.items():
            client, served, started = _client_cpu(), tree_cpu(serving()), time.monotonic()
            once()
            samples[name].append((time.monotonic() - started, _client_cpu() - client,
                                  tree_cpu(serving()) - served))
    return {name: Timing(min(s[0] for s in got), statistics.median(s[0] for s in got),
                         statistics.mean(s[1] for s in got), statistics.mean(s[2] for s in got))
            for name, got in samples.items()}


def download(url: str, headers: dict[str, str]) -> None:
    with requests.get(url, headers=headers, stream=True, timeout=600) as resp:
        resp.raise_for_status()
        for _ in resp.iter_content(CHUNK):
            pass


def upload(url: str, headers: dict[str, str], path: Path) -> None:
    with path.open("rb") as fh:
        resp = requests.put(url, data=fh, headers={**headers, "Content-Length": str(path.stat().st_size)},
                            timeout=600)
    resp.raise_for_status()


class Bench:
    def __init__(self, root: Path, mib: int, runs: int, http_only: bool = False) -> None:
        self.root, self.runs, self.http_only = root, runs, http_only
        self.obj = root / "object.bin"
        with self.obj.open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(CHUNK))
        self.size = self.obj.stat().st_size
        self.oid = hashlib.sha256(self.obj.read_bytes()).hexdigest()
        self.gs = GitServer(root / "gitserver")
        self.ossh = OpenSSHServer(root / "openssh", self.gs.data_dir)
        self.home = root / "client"
        self.nginx: subprocess.Popen[bytes] | None = None
        self.cpu: dict[str, Timing] = {}

    def start(self) -> None:
        from gitserver.admin import grants, keys, repos, tenants, tokens, users

        self.home.mkdir(parents=True)
        self.key = self.home / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        public = self.key.with_suffix(".pub").read_text().strip()
        self.gs.root.mkdir(parents=True)
        self.gs.start()
        self.ossh.start()
        with self.gs.db() as session:
            tenant = tenants.create_tenant(session, TENANT)
            user = users.create_user(session, tenant, USER, "member")
            keys.add_user_key(session, user, public, "bench")
            for name in ("lfs", "lfs-http"):
                grants.set_grant(session, repos.create_repo(session, self.gs.runtime.store, tenant, name),
                                 "write", user=user)
            _, self.token = tokens.create_token(session, user=user, name="bench")
        self.ossh.authorized_keys.write_text(public + "\n")
        served = self.ossh.root / "served"
        served.mkdir()
        shutil.copy(self.obj, served / "object.bin")
        self.ossh.hand_over([served])
        self.served = served / "object.bin"
        self._wait_http()
        self._start_nginx()

    def _wait_http(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.gs.http_url + "/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("gitserver's API did not start")

    def _start_nginx(self) -> None:
        root = self.root / "nginx"
        (root / "files").mkdir(parents=True)
        (root / "body").mkdir()
        for writable in (root / "files", root / "body"):  # nginx's workers run as www-data
            writable.chmod(0o777)
        shutil.copy(self.obj, root / "files" / "object.bin")
        self.nginx_port = free_port()
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=self.nginx_port))
        self.nginx = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf")], start_new_session=True)
        self.nginx_url = f"http://127.0.0.1:{self.nginx_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.head(self.nginx_url + "/object.bin", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start")

    def git_env(self) -> dict[str, str]:
        ssh = (f"ssh -i {self.key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
               "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
        (self.home / ".gitconfig").write_text("[user]\n\tname = bench\n\temail = bench@example.com\n")
        env = {**os.environ, "HOME": str(self.home), "GIT_SSH_COMMAND": ssh, "GIT_TERMINAL_PROMPT": "0"}
        subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True, capture_output=True)
        return env

    def batch(self, repo: str, operation: str) -> dict[str, dict[str, object]]:
        resp = requests.post(f"{self.gs.http_url}/{TENANT}/{repo}.git/info/lfs/objects/batch",
                             headers={"Accept": MEDIA, "Content-Type": MEDIA, "Authorization": f"Bearer {self.token}"},
                             json={"operation": operation, "objects": [{"oid": self.oid, "size": self.size}]},
                             timeout=60)
        resp.raise_for_status()
        return dict(resp.json()["objects"][0].get("actions", {}))

    def run(self) -> dict[str, float]:
        env = self.git_env()
        work = self.root / "work"
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], env=env, check=True)
        for argv in (["git", "lfs", "install", "--local"], ["git", "lfs", "track", "*.bin"]):
            subprocess.run(argv, cwd=work, env=env, check=True, capture_output=True)
        shutil.copy(self.obj, work / "object.bin")
        subprocess.run(["git", "add", "-A"], cwd=work, env=env, check=True)
        subprocess.run(["git", "commit", "-q", "-m", "object"], cwd=work, env=env, check=True)
        ssh_url = self.gs.url("lfs")
        started = time.monotonic()
        subprocess.run(["git", "push", "-q", ssh_url, "main"], cwd=work, env=env, check=True, capture_output=True)
        figures = {"ssh_upload_push": time.monotonic() - started}

        clone = self.root / "clone"
        subprocess.run(["git", "clone", "-q", ssh_url, str(clone)], env={**env, "GIT_LFS_SKIP_SMUDGE": "1"},
                       check=True)
        store = clone / ".git" / "lfs" / "objects"

        def lfs_fetch(*options: str) -> None:
            shutil.rmtree(store, ignore_errors=True)
            subprocess.run(["git", *options, "lfs", "fetch"], cwd=clone, env=env, check=True, capture_output=True)

        def scp() -> None:
            subprocess.run(["scp", "-O", "-q", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                            "-P", str(self.ossh.port),
                            f"{self.ossh.user}@127.0.0.1:{self.served}", str(self.root / "scp.bin")], check=True)

        def raw() -> None:
            from gitserver.lfs import pktline

            script = (pktline.text("version 1") + pktline.FLUSH + pktline.text(f"get-object {self.oid}")
                      + pktline.text(f"size={self.size}") + pktline.FLUSH + pktline.text("quit") + pktline.FLUSH)
            ssh = [*env["GIT_SSH_COMMAND"].split(), "-p", str(self.gs.port), "git@127.0.0.1",
                   f"git-lfs-transfer {TENANT}/lfs download"]
            with open(os.devnull, "wb") as sink:
                subprocess.run(ssh, input=script, stdout=sink, check=True)

        # git-lfs opens one SSH connection per transfer worker (8 by default), even for one object.
        def gitserver_ssh() -> int:
            return self.gs.accounting_root

        ssh_rows: dict[str, Row] = {
            "ssh_download": (lfs_fetch, gitserver_ssh),
            "ssh_download_1conn": (lambda: lfs_fetch("-c", "lfs.concurrenttransfers=1"), gitserver_ssh),
            "ssh_raw_download": (raw, gitserver_ssh), "scp_download": (scp, lambda: self.ossh.accounting_root)}
        down = self.batch("lfs", "download")["download"]
        up = self.batch("lfs-http", "upload")["upload"]  # its token may PUT the object again

        def api() -> int:
            return self.gs.api_pid

        def nginx() -> int:
            assert self.nginx is not None
            return self.nginx.pid

        http_rows: dict[str, Row] = {
            "http_download": (lambda: download(str(down["href"]), dict(down["header"])), api),  # type: ignore[call-overload]
            "nginx_download": (lambda: download(self.nginx_url + "/object.bin", {}), nginx),
            "http_upload": (lambda: upload(str(up["href"]), dict(up["header"]), self.obj), api),  # type: ignore[call-overload]
            "nginx_upload": (lambda: upload(self.nginx_url + "/put.bin", {}, self.obj), nginx)}
        for rows in ((http_rows,) if self.http_only else (ssh_rows, http_rows)):
            for name, timing in alternate(self.runs, rows).items():
                figures[name] = timing.wall
                self.cpu[name] = timing
        return figures

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.wait()
        self.ossh.stop()
        self.gs.stop()


def report(figures: dict[str, float], cpu: dict[str, Timing], size: int) -> None:
    def rate(name: str) -> float:
        return size / figures[name] / 1e6

    for name in sorted(figures):
        used = (f"  CPU: client {cpu[name].client_cpu:5.2f} s, server {cpu[name].server_cpu:5.2f} s"
                if name in cpu else "")
        print(f"{name:18} {figures[name]:7.2f} s  {rate(name):8.1f} MB/s{used}")
    for ours, theirs in (("http_download", "nginx_download"), ("http_upload", "nginx_upload"),
                         ("ssh_download", "scp_download"), ("ssh_download_1conn", "scp_download"),
                         ("ssh_raw_download", "scp_download")):
        if ours not in figures:
            continue
        medians = cpu[theirs].median / cpu[ours].median
        print(f"{ours} / {theirs}: {rate(ours) / rate(theirs):.2f}x (median runs: {medians:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--http-only", action="store_true", help="skip the SSH rows")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "git-lfs", "scp") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench.lfs needs {', '.join(missing)} (Debian: apt-get install nginx-light git-lfs)")
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="gitserver-lfs-bench-"))
    os.chmod(root, 0o755)
    bench = Bench(root, args.mib, args.runs, args.http_only)
    try:
        bench.start()
        figures = bench.run()
    finally:
        bench.stop()
    report(figures, bench.cpu, bench.size)
    print(f"load average (1 min) at start and end: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
