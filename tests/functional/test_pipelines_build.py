"""Builds from ``.gitserver/pipeline.toml`` and the pipeline API, through the real server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, commit_files, start_server
from tests.functional.test_pipelines import push, setup_repo, wait_pipeline


def api_log(server: GitServer, pid: int, offset: int = 0, token: str | None = None) -> tuple[str, int, str]:
    response = server.api("GET", f"/api/v1/pipelines/{pid}/log?offset={offset}", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return (response.content.decode(), int(response.headers["X-Log-Offset"]),
            response.headers["X-Pipeline-Status"])


def full_log(server: GitServer, pid: int) -> str:
    return api_log(server, pid)[0]


def test_build_runs_steps_with_coordinates_and_streams_log(server: GitServer, git_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    toml = ('[[steps]]\nname = "env"\ncommand = "echo repo=$GITSERVER_REPO tag=$GITSERVER_TAG '
            'ref=$GITSERVER_REF commit=$GITSERVER_COMMIT mode=$MODE; env | sort | cut -d= -f1 | tr \'\\\\n\' \' \'"\n'
            'env = { MODE = "ci" }\n\n'
            '[[steps]]\nname = "files"\ncommand = ["cat", "hello.txt"]\ntimeout = 30\n')
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                          files={".gitserver/pipeline.toml": toml, "hello.txt": "hi there\n"})
    pid = push(server, user, work, "main")
    pipeline = wait_pipeline(server, pid)
    log = full_log(server, pid)
    assert pipeline.status == "succeeded", f"{pipeline.error}\n{log}"
    assert (f"repo={tenant}/{repo} tag={pipeline.archive_tag} ref=refs/heads/main "
            f"commit={pipeline.commit} mode=ci") in log
    env_names = log.split("mode=ci", 1)[1].split("\n", 1)[1].split("\n", 1)[0].split()
    assert set(env_names) <= {"PATH", "HOME", "LANG", "TMPDIR", "MODE", "PWD", "SHLVL", "_", "OLDPWD",
                              "GITSERVER_REPO", "GITSERVER_REF", "GITSERVER_COMMIT", "GITSERVER_TAG",
                              "GITSERVER_READONLY_URL"}, env_names
    assert "hi there" in log
    detail = server.api("GET", f"/api/v1/pipelines/{pid}").json()
    assert [(s["name"], s["status"], s["exit_code"]) for s in detail["steps"]] == [
        ("archive", "succeeded", 0), ("pipeline-file", "succeeded", 0), ("env", "succeeded", 0),
        ("files", "succeeded", 0)]
    assert detail["archive_tag"] == pipeline.archive_tag and detail["duration_seconds"] >= 0
    # Following the log from an offset gives the rest, and an empty body at the end.
    text, offset, status = api_log(server, pid, 10)
    assert text == log[10:] and offset == len(log.encode()) and status == "succeeded"
    assert api_log(server, pid, offset)[0] == ""


def test_failing_step_fails_pipeline_with_exit_code(server: GitServer, git_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    toml = ('[[steps]]\nname = "bad"\ncommand = "echo about to fail; exit 3"\n'
            '[[steps]]\nname = "never"\ncommand = "true"\n')
    _t, _r, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                    files={".gitserver/pipeline.toml": toml})
    pid = push(server, user, work, "main")
    pipeline = wait_pipeline(server, pid)
    assert pipeline.status == "failed" and pipeline.error == "step bad failed: exited with status 3"
    assert pipeline.archive_tag  # the archive was made before the build
    steps = server.api("GET", f"/api/v1/pipelines/{pid}").json()["steps"]
    assert [(s["name"], s["status"], s["exit_code"]) for s in steps][-1] == ("bad", "failed", 3)
    assert "about to fail" in full_log(server, pid)


def test_malformed_pipeline_file_names_the_line(server: GitServer, git_env: dict[str, str],
                                                tmp_path: Path) -> None:
    toml = '[[steps]]\nname = "ok"\ncommand = "true"\n\n[[steps]]\nname = "broken"\ncommand = \n'
    _t, _r, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                    files={".gitserver/pipeline.toml": toml})
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    assert pipeline.status == "failed"
    assert pipeline.error.startswith(".gitserver/pipeline.toml: line 7, column")
    # A well-formed TOML with a bad step: the line of that step's key is named.
    commit_files(work, git_env, {".gitserver/pipeline.toml":
                                 '[[steps]]\nname = "ok"\ncommand = "true"\n'
                                 '[[steps]]\nname = "x"\ntimeout = -1\ncommand = "true"\n'})
    second = wait_pipeline(server, push(server, user, work, "main"))
    assert second.status == "failed"
    assert second.error == (".gitserver/pipeline.toml: line 6: step 2: 'timeout' must be a positive "
                            "number of seconds")
    assert second.error in full_log(server, second.id)


@pytest.mark.skipif(os.geteuid() != 0, reason="build isolation needs the worker to run as root")
def test_build_step_cannot_read_server_data(server: GitServer, git_env: dict[str, str],
                                            tmp_path: Path) -> None:
    db_file = server.data_dir / "gitserver.db"
    script = (f"id -u; test -r {db_file} && echo DB-READABLE || echo DB-UNREADABLE; "
              f"ls {server.data_dir} >/dev/null 2>&1 && echo DATA-LISTED || echo DATA-UNLISTED; "
              f"cat {server.data_dir}/ssh/ssh_host_ed25519_key >/dev/null 2>&1 && echo KEY-READ || echo KEY-UNREAD")
    toml = f'[[steps]]\nname = "snoop"\ncommand = "{script}"\n'
    _t, _r, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                    files={".gitserver/pipeline.toml": toml})
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    log = full_log(server, pipeline.id)
    assert pipeline.status == "succeeded", log
    lines = log.splitlines()  # (the log also echoes the command, so compare whole lines)
    assert "DB-UNREADABLE" in lines and "DB-READABLE" not in lines
    assert "DATA-UNLISTED" in lines and "KEY-UNREAD" in lines
    # The step ran as the UID its sandbox leased (never root, never the server's user).
    sandbox_line = next(line for line in lines if line.startswith("sandbox: uid "))
    uid = sandbox_line.split()[2].rstrip(",")
    assert uid in lines and int(uid) >= 100000
    assert "sandbox: bubblewrap, a UID of its own" in log
    if server.db_url.startswith("sqlite"):
        assert db_file.exists()  # the file is there; the build just cannot reach it


def processes_with(marker: str) -> list[int]:
    """Host pids of live processes whose environment holds ``marker`` (needs root to read
    other users' /proc/<pid>/environ; the marker is unique to one test)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().split(") ", 1)[1][0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids


def test_cancel_from_api_stops_running_step(server: GitServer, git_env: dict[str, str],
                                            tmp_path: Path) -> None:
    marker = f"GS_TEST_MARKER={os.getpid()}{time.monotonic_ns()}"
    name, value = marker.split("=")
    # The step starts a grandchild in its own session, which a process-group kill would miss.
    toml = (f'[[steps]]\nname = "long"\ncommand = "setsid sleep 600 & echo RUNNING; exec sleep 600"\n'
            f'env = {{ {name} = "{value}" }}\n')
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                          files={".gitserver/pipeline.toml": toml})
    reader = server.new_user(tenant)
    server.api("PUT", f"/api/v1/tenants/{tenant}/repos/{repo}/grants/users/{reader.name}",
               json={"permission": "read"}).raise_for_status()
    outsider = server.new_user(server.new_tenant())
    pid = push(server, user, work, "main")
    wait_for(lambda: "\nRUNNING\n" in full_log(server, pid), timeout=60, interval=0.1,
             what="the sleep step to start")
    if os.geteuid() == 0:
        assert len(wait_for(lambda: processes_with(marker), timeout=5, what="the step's processes")) >= 2
    # Other tenants cannot even see it; readers see it but cannot cancel it.
    assert server.api("POST", f"/api/v1/pipelines/{pid}/cancel", token=outsider.token).status_code == 404
    assert server.api("GET", f"/api/v1/pipelines/{pid}", token=outsider.token).status_code == 404
    assert server.api("GET", f"/api/v1/pipelines/{pid}", token=reader.token).status_code == 200
    assert server.api("POST", f"/api/v1/pipelines/{pid}/cancel", token=reader.token).status_code == 403
    t0 = time.monotonic()
    response = server.api("POST", f"/api/v1/pipelines/{pid}/cancel", token=user.token)
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    pipeline = wait_pipeline(server, pid, timeout=5)
    elapsed = time.monotonic() - t0
    assert pipeline.status == "cancelled" and elapsed < 5
    print(f"\ncancel of a running step took {elapsed * 1000:.0f} ms")
    if os.geteuid() == 0:
        # Every process of the step is gone, even the one that escaped its process group.
        wait_for(lambda: not processes_with(marker), timeout=5, what="the step's processes to be gone")
    steps = server.api("GET", f"/api/v1/pipelines/{pid}").json()["steps"]
    assert steps[-1]["name"] == "long" and steps[-1]["status"] == "cancelled"
    # Cancelling a finished pipeline changes nothing.
    again = server.api("POST", f"/api/v1/pipelines/{pid}/cancel", token=user.token)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_pipeline_and_archive_lists(server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    first = wait_pipeline(server, push(server, user, work, "main"))
    commit_files(work, git_env, {"x.txt": "x\n"})
    second = wait_pipeline(server, push(server, user, work, "main"))
    base = f"/api/v1/tenants/{tenant}/repos/{repo}"
    listed = server.api("GET", f"{base}/pipelines?limit=1", token=user.token).json()
    assert [p["id"] for p in listed["items"]] == [second.id] and listed["next"]
    rest = server.api("GET", f"{base}/pipelines?limit=1&cursor={listed['next']}", token=user.token).json()
    assert [p["id"] for p in rest["items"]] == [first.id]
    item = rest["items"][0]
    assert (item["status"], item["ref"], item["commit"], item["archive_tag"]) == (
        "succeeded", "refs/heads/main", first.commit, first.archive_tag)
    assert item["started_at"] and item["finished_at"] and item["duration_seconds"] is not None
    archives = server.api("GET", f"{base}/archives", token=user.token).json()["items"]
    assert [a["tag"] for a in archives] == [second.archive_tag, first.archive_tag]
    assert archives[1]["source_commit"] == first.commit and archives[1]["source_ref"] == "refs/heads/main"
    outsider = server.new_user(server.new_tenant())
    assert server.api("GET", f"{base}/pipelines", token=outsider.token).status_code == 404
    assert server.api("GET", f"{base}/archives", token=outsider.token).status_code == 404
    assert server.api("GET", f"/api/v1/pipelines/{first.id}/log", token=outsider.token).status_code == 404
    bad = server.api("GET", f"/api/v1/pipelines/{first.id}/log?offset=-1", token=user.token)
    assert bad.status_code == 400 and bad.json().get("field") == "offset"
    assert server.api("GET", "/api/v1/pipelines/999999999").status_code == 404


def test_push_of_several_refs_builds_each_branch_and_opted_in_tags(
        server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess

    toml = ('[[steps]]\nname = "show"\ncommand = "echo built $GITSERVER_REF $(cat which.txt) '
            '$GITSERVER_TAG; test \\"$(cat which.txt)\\" != broken"\n')
    _t, _r, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                    files={".gitserver/pipeline.toml": toml, "which.txt": "main\n"})
    subprocess.run(["git", "branch", "feature"], cwd=work, env=git_env, check=True)
    subprocess.run(["git", "tag", "-a", "v1", "-m", "v1"], cwd=work, env=git_env, check=True)
    commit_files(work, git_env, {"which.txt": "second\n"})
    pipeline = wait_pipeline(server, push(server, user, work, "main", "feature", "v1"))
    log = full_log(server, pipeline.id)
    assert pipeline.status == "succeeded", f"{pipeline.error}\n{log}"
    archives = {a["ref"]: a["tag"] for a in json.loads(pipeline.result)["archives"]}
    # Each branch is built from its own tree, told its own ref and tag; the tag is not built.
    assert f"built refs/heads/main second {archives['refs/heads/main']}" in log.splitlines()
    assert f"built refs/heads/feature main {archives['refs/heads/feature']}" in log.splitlines()
    assert "refs/tags/v1: a tag; not built (add build_tags = true" in log
    steps = server.api("GET", f"/api/v1/pipelines/{pipeline.id}").json()["steps"]
    names = [(s["name"], s["status"]) for s in steps]
    assert names[0] == ("archive", "succeeded")
    assert sorted(names[1:]) == sorted([
        ("refs/heads/main: pipeline-file", "succeeded"), ("refs/heads/main: show", "succeeded"),
        ("refs/heads/feature: pipeline-file", "succeeded"), ("refs/heads/feature: show", "succeeded"),
        ("refs/tags/v1: pipeline-file", "succeeded")])

    # A tag is built when its pipeline file opts in; a failing branch does not stop the others
    # and the pipeline's error names the ref that failed.
    commit_files(work, git_env, {".gitserver/pipeline.toml": "build_tags = true\n" + toml,
                                 "which.txt": "broken\n"})
    subprocess.run(["git", "tag", "-a", "v2", "-m", "v2"], cwd=work, env=git_env, check=True)
    subprocess.run(["git", "checkout", "-q", "feature"], cwd=work, env=git_env, check=True)
    commit_files(work, git_env, {"which.txt": "feature2\n"})
    second = wait_pipeline(server, push(server, user, work, "main", "feature", "v2"))
    log = full_log(server, second.id)
    assert second.status == "failed", log
    assert second.error == ("refs/heads/main: step show failed: exited with status 1; "
                            "refs/tags/v2: step show failed: exited with status 1"), log
    assert "built refs/heads/feature feature2" in log and "built refs/tags/v2 broken" in log
    steps = {s["name"]: s["status"] for s in server.api("GET", f"/api/v1/pipelines/{second.id}").json()["steps"]}
    assert steps["refs/heads/main: show"] == "failed"
    assert steps["refs/heads/feature: show"] == "succeeded" and steps["refs/tags/v2: show"] == "failed"


@pytest.mark.skipif(os.geteuid() != 0, reason="the network of a step needs the worker to run as root")
def test_build_network_is_none_unless_the_pipeline_file_asks(server: GitServer, git_env: dict[str, str],
                                                             tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import shutil

    if shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") is None:
        pytest.skip("no python3 on the build PATH")

    def connect_step(port: int, network: str = "") -> str:
        return (network + '[[steps]]\nname = "net"\ncommand = ["python3", "-c", "import socket; '
                f"socket.create_connection(('127.0.0.1', {port}), timeout=5).close(); "
                "print('CONNECTED')\"]\n")

    # By default a step has only a loopback of its own: the API port is not there.
    _t, _r, user, work = setup_repo(server, git_env, tmp_path / "default", builds=True,
                                    files={".gitserver/pipeline.toml": connect_step(server.http_port)})
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    log = full_log(server, pipeline.id)
    assert "no network (only its own loopback)" in log, log
    assert pipeline.status == "failed" and "CONNECTED" not in log.splitlines(), log
    assert pipeline.error == "step net failed: exited with status 1"
    assert "ConnectionRefusedError" in log  # its own loopback: nothing listens on that port

    # network = "host" in the pipeline file, which the shared server (build_network "host") allows.
    asks = 'network = "host"\n'
    _t, _r, user, work = setup_repo(server, git_env, tmp_path / "host", builds=True,
                                    files={".gitserver/pipeline.toml": connect_step(server.http_port, asks)})
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    log = full_log(server, pipeline.id)
    assert pipeline.status == "succeeded" and "CONNECTED" in log.splitlines(), log
    assert "the host's network" in log

    # A private server on the same database backend with build_network = none: the same file
    # fails without running.
    db_url = (f"sqlite:///{tmp_path / 'none' / 'data' / 'gitserver.db'}" if server.db_url.startswith("sqlite")
              else request.getfixturevalue("pg_cluster").create_database())
    isolated = start_server(tmp_path / "none", db_url, git_env,
                            extra_env={"GITSERVER_BUILD_NETWORK": "none", "GITSERVER_WORKERS": "1"})
    try:
        _t, _r, user, work = setup_repo(isolated, git_env, tmp_path / "none", builds=True,
                                        files={".gitserver/pipeline.toml": connect_step(isolated.http_port, asks)})
        pipeline = wait_pipeline(isolated, push(isolated, user, work, "main"))
        log = full_log(isolated, pipeline.id)
        assert pipeline.status == "failed" and "CONNECTED" not in log.splitlines(), log
        assert pipeline.error == ('step net failed: the pipeline file asks for network = "host" but '
                                  'this server\'s build_network is "none": the step was not run')
        assert 'build_network is "none": no step gets the network' in log
    finally:
        isolated.stop()
