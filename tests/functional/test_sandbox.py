"""The job sandbox (docs/sandbox.md) through the real server: two tenants' builds running at the
same time try to reach each other, and an alignment tool runs confined too.

Needs root (the worker gives each job a UID of its own) and bubblewrap; as root a missing bwrap
fails these tests instead of skipping them, so CI cannot silently stop sandboxing.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest

from gitserver.config import Config
from gitserver.policy.values import UidRange, parse_uid_range
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, make_repo, start_server, unique
from tests.functional.test_pipelines import push, setup_repo, wait_pipeline
from tests.functional.test_pipelines_build import full_log, processes_with

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need the worker to run as root")

# Run by each tenant's build step. It waits for the test to tell it where the other tenant's
# job is (other.env: its workspace, a host pid of its, its name), then tries to reach it. Every
# attempt runs for real and its error reaches the log ("attempt" line, the command's own
# message, then DENIED or LEAK); the same checks against its own things must succeed first
# (OWN-OK), so a check that could never succeed proves nothing.
PROBE = r'''
set -u
attempt() { name=$1; shift; echo "attempt $name: $*"; if "$@"; then echo "LEAK $name"; else echo "DENIED $name"; fi; }
own() { name=$1; shift; if "$@" >/dev/null; then echo "OWN-OK $name"; else echo "OWN-FAIL $name"; fi; }
echo "secret-of-$ME" > secret.txt
echo "secret-tmp-of-$ME" > "/tmp/secret-$ME"
sleep 300 &
BG=$!
echo "READY $ME uid=$(id -u)"
i=0; while [ ! -s other.env ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done
. ./other.env
own read-workspace cat secret.txt
own write-workspace sh -c 'echo mine >> build.sh'
own read-tmp cat "/tmp/secret-$ME"
own read-proc cat /proc/$$/status
attempt read-workspace cat "$OTHER_WS/src/secret.txt"
attempt list-workspace ls "$OTHER_WS"
attempt write-workspace sh -c "echo 'echo evil-from-$ME' >> '$OTHER_WS/src/build.sh'"
attempt read-tmp cat "/tmp/secret-$OTHER"
attempt list-host-workspaces sh -c "ls -d /tmp/gitserver-build-* | grep -v '^$OWN_WS\$'"
attempt read-proc cat "/proc/$OTHER_PID/status"
attempt signal-process kill -0 "$OTHER_PID"
attempt list-data ls "$DATA"
attempt read-database head -c 16 "$DATA/gitserver.db"
attempt write-data touch "$DATA/planted"
attempt write-system touch /usr/planted
echo "processes seen: $(ls -d /proc/[0-9]* | wc -l)"
echo PROBES-DONE
i=0; while [ ! -e finish.env ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done
grep -q evil build.sh && echo "BUILD-SCRIPT-TAMPERED" || echo "BUILD-SCRIPT-INTACT"
kill $BG
'''
PROBES = ("read-workspace", "list-workspace", "write-workspace", "read-tmp", "list-host-workspaces",
          "read-proc", "signal-process", "list-data", "read-database", "write-data", "write-system")
OWN_CHECKS = ("read-workspace", "write-workspace", "read-tmp", "read-proc")


def _workspace_of(name: str) -> Path | None:
    """The running build workspace whose step wrote ``secret-of-<name>`` (the test is root)."""
    for path in glob.glob("/tmp/gitserver-build-*/src/secret.txt"):
        try:
            if Path(path).read_text().strip() == f"secret-of-{name}":
                return Path(path).parent.parent
        except OSError:
            continue
    return None


def test_two_tenants_concurrent_builds_cannot_reach_each_other(server: GitServer, git_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    names = {side: unique(f"job{side}") for side in "AB"}
    pipelines: dict[str, int] = {}
    for side, name in names.items():
        toml = (f'[[steps]]\nname = "probe"\ncommand = ["/bin/sh", "probe.sh"]\ntimeout = 900\n'
                f'env = {{ ME = "{name}", GS_PROBE = "{name}" }}\n')
        _t, _r, user, work = setup_repo(server, git_env, tmp_path / side, builds=True,
                                        files={".gitserver/pipeline.toml": toml, "probe.sh": PROBE,
                                               "build.sh": "echo building\n"})
        pipelines[side] = push(server, user, work, "main")
    for side, name in names.items():
        wait_for(lambda name=name, side=side: f"READY {name}" in full_log(server, pipelines[side]),
                 timeout=120, interval=0.2, what=f"tenant {side}'s build step to run")
    # Both run now, each with its own workspace and processes; tell each where the other is.
    workspaces = {side: wait_for(lambda name=name: _workspace_of(name), timeout=10, what="workspaces")
                  for side, name in names.items()}
    host_pids = {side: processes_with(f"GS_PROBE={name}") for side, name in names.items()}
    for side, other in (("A", "B"), ("B", "A")):
        assert host_pids[other], f"no process of tenant {other}'s step found"
        (workspaces[side] / "src" / "other.env").write_text(
            f"OTHER={names[other]}\nOTHER_WS={workspaces[other]}\nOWN_WS={workspaces[side]}\n"
            f"OTHER_PID={host_pids[other][0]}\nDATA={server.data_dir}\n")
    for side in names:
        wait_for(lambda side=side: "PROBES-DONE" in full_log(server, pipelines[side]), timeout=120,
                 interval=0.2, what=f"tenant {side}'s probes")
    for side in names:
        (workspaces[side] / "src" / "finish.env").write_text("\n")
    uids = {}
    for side in names:
        pipeline = wait_pipeline(server, pipelines[side], timeout=120)
        log = full_log(server, pipelines[side])
        print(f"--- tenant {side}'s log\n{log}")  # (shown with -s, or when the test fails)
        lines = log.splitlines()
        assert pipeline.status == "succeeded", log
        for check in OWN_CHECKS:
            assert f"OWN-OK {check}" in lines, log
        for probe in PROBES:
            assert f"DENIED {probe}" in lines and f"LEAK {probe}" not in lines, f"{probe}:\n{log}"
        # The attempts really ran: each refusal is the command's own error message.
        assert "No such file or directory" in log or "Permission denied" in log
        assert f"cat: /proc/{host_pids['B' if side == 'A' else 'A'][0]}/status: No such file" in log
        assert "Read-only file system" in log  # touch /usr/planted
        assert "BUILD-SCRIPT-INTACT" in lines and "BUILD-SCRIPT-TAMPERED" not in lines, log
        sandbox_line = next(line for line in lines if line.startswith("sandbox: uid "))
        assert "no network (only its own loopback)" in sandbox_line
        uids[side] = int(next(line for line in lines if line.startswith("READY ")).split("uid=")[1])
        assert sandbox_line.startswith(f"sandbox: uid {uids[side]},")
        processes = int(next(line for line in lines if line.startswith("processes seen: ")).split(": ")[1])
        assert processes < 10, log  # its own few, not the host's hundreds
    # Each job had a UID of its own, from the configured range, and neither is the server's.
    default_range: UidRange = parse_uid_range(Config().sandbox_uid_range)
    assert uids["A"] != uids["B"]
    assert all(default_range.first <= uid <= default_range.last for uid in uids.values())
    assert not (server.data_dir / "planted").exists()


# A "process" alignment tool that reports what it can see from inside its sandbox.
PROCESS_TOOL = r'''
import json, os, pathlib, sys
data = sys.argv[1]
report = {"uid": os.getuid(), "cwd": os.getcwd(),
          "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
          "data_visible": os.path.exists(data),
          "tmp": sorted(os.listdir("/tmp"))}
try:
    with open(".git/config", "a") as fh:
        fh.write("[core]\n\tpager = evil\n")
    report["git_config"] = "written"
except OSError as exc:
    report["git_config"] = exc.strerror
pathlib.Path("aligned.txt").write_text("aligned in a sandbox\n")
result = {"version": "1.0.0-sandboxed", "report": report}
pathlib.Path(os.environ["GITSERVER_ADJUST_RESULT"]).write_text(json.dumps(result))
'''


def test_alignment_tool_runs_in_the_sandbox(tmp_path: Path, git_env: dict[str, str]) -> None:
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert python, "the system needs python3 for this stand-in tool"
    tool_dir = tmp_path / "tool"
    tool_dir.mkdir()
    (tool_dir / "probe.py").write_text(PROCESS_TOOL)
    data_dir = tmp_path / "data"
    srv = start_server(tmp_path, f"sqlite:///{data_dir / 'gitserver.db'}", git_env, extra_env={
        "GITSERVER_ADJUST_PROCESS_COMMAND": f"{python} {tool_dir / 'probe.py'} {data_dir}",
        "GITSERVER_SANDBOX_READ_ONLY_PATHS": str(tool_dir), "GITSERVER_WORKERS": "1"})
    try:
        tenant = srv.new_tenant()
        user = srv.new_user(tenant, role="admin")
        repo = srv.new_repo(tenant)
        work = make_repo(tmp_path / "work", git_env, {"README.md": "hi\n"})
        srv.git(user, "push", "-q", srv.repo_url(tenant, repo), "main", cwd=work)
        spec = {"ref": "main",  # MVN, whose tool is not configured: the process command runs
                "internal_url": {"readwrite": srv.repo_url(tenant, repo),
                                 "readonly": f"{srv.http_url}/git/{tenant}/{repo}.git"}}
        resp = srv.api("POST", "/adjust", json=spec, token=user.token)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        report = body["adjustResultData"]["report"]
        assert body["tag"].startswith("1.0.0-sandboxed")
        default_range = parse_uid_range(Config().sandbox_uid_range)
        assert default_range.first <= report["uid"] <= default_range.last, report
        assert report["pids"] == sorted(report["pids"]) and max(report["pids"]) < 10, report
        assert report["data_visible"] is False
        # .git stays the server's (and is mounted read-only): its config cannot be planted.
        assert report["git_config"] in ("Permission denied", "Read-only file system"), report
        # Its own /tmp: the job's directory is the only gitserver one there.
        assert [n for n in report["tmp"] if n.startswith("gitserver-")] == [Path(report["cwd"]).parts[2]]
        # The server's own git went on working in the tree afterwards: the change is committed.
        clone = tmp_path / "check"
        srv.git(user, "clone", "-q", "--branch", body["tag"], srv.repo_url(tenant, repo), str(clone))
        assert (clone / "aligned.txt").read_text() == "aligned in a sandbox\n"
        pipelines = srv.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/pipelines", token=user.token).json()
        adjust_id = next(p["id"] for p in pipelines["items"] if p["kind"] == "adjust")
        log = srv.api("GET", f"/api/v1/pipelines/{adjust_id}/log", token=user.token).text
        assert f"sandbox: uid {report['uid']}, private /tmp and PID namespace" in log, log
    finally:
        srv.stop()
