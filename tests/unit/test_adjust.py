"""Alignment providers: which one runs, the command line each builds, how results are read,
and the supervised command runner (timeout, stop)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from gitserver import config as config_mod
from gitserver.pipelines.jobs import JobCancelled
from gitserver.repour import adjust
from gitserver.repour import command as repour_command
from gitserver.repour import results as repour_results


def _config(**env: str) -> config_mod.Config:
    return config_mod.load(environ={f"GITSERVER_{k.upper()}": v for k, v in env.items()})


class FakeRunner:
    """Records the command and plays the tool: writes ``files`` (relative to cwd, or absolute)."""

    def __init__(self, files: Mapping[str, Any] | None = None, exit_code: int = 0,
                 result_arg: bool = False) -> None:
        self.files = files or {}
        self.exit_code = exit_code
        self.result_arg = result_arg
        self.calls: list[tuple[list[str], Path, dict[str, str]]] = []

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                 timeout: float) -> repour_command.CommandResult:
        self.calls.append((list(argv), cwd, dict(env)))
        for name, content in self.files.items():
            if name == "$RESULT":
                target = Path(env["GITSERVER_ADJUST_RESULT"])
            elif name == "--result":
                target = Path(next(a for a in argv if a.startswith("--result="))[len("--result="):])
            else:
                target = cwd / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content))
        return repour_command.CommandResult(list(argv), self.exit_code, "out", "boom" if self.exit_code else "")


def test_choose_provider() -> None:
    none = _config()
    assert adjust.choose_provider(none, "MVN").kind == "noop"
    cfg = _config(adjust_mvn_command="java -jar /opt/pme.jar", adjust_mvn_parameters="-DrestURL=http://da",
                  adjust_nodejs_command="java -jar /opt/pm.jar")
    pme = adjust.choose_provider(cfg, "MVN")
    assert (pme.kind, pme.command, pme.parameters) == ("pme", ("java", "-jar", "/opt/pme.jar"), ("-DrestURL=http://da",))
    assert adjust.choose_provider(cfg, "NODEJS").kind == "project-manipulator"
    assert adjust.choose_provider(cfg, "GRADLE").kind == "noop"
    with_process = _config(adjust_process_command="/usr/local/bin/align --fast")
    assert adjust.choose_provider(with_process, "GRADLE") == adjust.Provider("process",
                                                                             ("/usr/local/bin/align", "--fast"))
    assert adjust.choose_provider(with_process, "SBT").kind == "process"


def test_build_command_order_and_temp_build() -> None:
    cfg = _config()
    provider = adjust.Provider("pme", ("java", "-jar", "pme.jar"), ("-Dconfigured=1",))
    request = adjust.AdjustRequest(parameters={"ALIGNMENT_PARAMETERS": "-Duser=1 '-Dquoted=a b'"},
                                   default_alignment_params="-Ddefault=1 -Ddefault=2", temp_build=True,
                                   temp_build_timestamp="20240101")
    assert adjust.build_command(provider, request, cfg, extra=["--x"]) == [
        "java", "-jar", "pme.jar", "-Dconfigured=1", "-Ddefault=1", "-Ddefault=2",
        "-DversionIncrementalSuffix=20240101-redhat", "-Duser=1", "-Dquoted=a b", "--x"]
    request = adjust.AdjustRequest(temp_build=True)
    assert "-DversionIncrementalSuffix=temporary-redhat" in adjust.build_command(provider, request, cfg)


@pytest.mark.parametrize("text", ["clean install", "-Dok=1 deploy", "-Dx='unbalanced"])
def test_user_parameters_must_be_options(text: str) -> None:
    with pytest.raises(repour_command.ProcessingError) as info:
        adjust.user_parameters("project-manipulator", {"ALIGNMENT_PARAMETERS": text})
    assert info.value.exit_code == repour_command.USER_ERROR_EXIT_CODE


@pytest.mark.parametrize("kind", ["pme", "gme"])
def test_maven_and_gradle_parameters_may_be_bare_words(kind: str) -> None:
    # Repour passes PME/GME parameters on as split (util.get_extra_parameters): option values
    # are separate words there.
    assert adjust.user_parameters(kind, {"ALIGNMENT_PARAMETERS": "-s settings.xml -Dx=1"}) == [
        "-s", "settings.xml", "-Dx=1"]
    with pytest.raises(repour_command.ProcessingError, match="cannot be split"):
        adjust.user_parameters(kind, {"ALIGNMENT_PARAMETERS": "-Dx='unbalanced"})


@pytest.mark.parametrize("argv, kept, location", [
    (["-Da=1", "--file=sub/pom.xml"], ["-Da=1"], "sub/pom.xml"),
    (["--file", "sub/pom.xml", "-Da=1"], ["-Da=1"], "sub/pom.xml"),
    (["-f", "sub", "-Da=1"], ["-Da=1"], "sub"),
    (["-fae", "-Da=1"], ["-fae", "-Da=1"], None),
    (["-Da=1"], ["-Da=1"], None),
])
def test_split_file_option(argv: list[str], kept: list[str], location: str | None) -> None:
    assert adjust.split_file_option(argv) == (kept, location)


@pytest.mark.parametrize("build_type, kind", [
    ("MVN", "pme"), ("MVN_RPM", "pme"), ("GRADLE", "gme"), ("NPM", "project-manipulator"),
    ("NODEJS", "project-manipulator"), ("SBT", "smeg"),
])
def test_every_pnc_build_type_has_its_tool(build_type: str, kind: str) -> None:
    cfg = _config(adjust_mvn_command="pme", adjust_gradle_command="gme", adjust_nodejs_command="pm",
                  adjust_sbt_command="sbt")
    assert adjust.choose_provider(cfg, build_type).kind == kind


def test_rpm_is_refused_like_reqour_does() -> None:
    with pytest.raises(repour_command.ProcessingError, match="Alignment for RPM builds is not supported yet"):
        adjust.choose_provider(_config(), "RPM")


GAV = {"groupId": "org.jboss", "artifactId": "demo", "version": "1.4.0.redhat-00001"}
REMOVED = [{"releases": True, "snapshots": False, "name": "JBoss", "id": "jboss", "url": "https://r.example/"}]


@pytest.mark.parametrize("data, expected", [
    # PME >= 4 (json.PME): the root GAV under "gav".
    ({"gav": GAV, "modules": []}, {"VersioningState": {"executionRootModified": GAV}, "RemovedRepositories": REMOVED}),
    # PME 3.x: "rootGAV"; Repour's own shape: "executionRoot".
    ({"rootGAV": GAV}, {"VersioningState": {"executionRootModified": GAV}, "RemovedRepositories": REMOVED}),
    ({"executionRoot": GAV}, {"VersioningState": {"executionRootModified": GAV}, "RemovedRepositories": REMOVED}),
    # GME's manipulation.json.
    ({"group": "org.jboss", "name": "demo", "version": "1.4.0.redhat-00001", "modules": {}},
     {"VersioningState": {"executionRootModified": GAV}, "RemovedRepositories": REMOVED}),
    # The old pom-manip-ext-result.json: already in Repour's shape.
    ({"VersioningState": {"executionRootModified": GAV}},
     {"VersioningState": {"executionRootModified": GAV}, "RemovedRepositories": REMOVED}),
    ({}, {}),
    (None, {}),
])
def test_alignment_result_data(data: dict | None, expected: dict) -> None:
    result = repour_results.alignment_result_data(data, REMOVED)
    assert result == expected
    assert repour_results.result_version(result) == (GAV["version"] if expected else None)


def test_project_manipulator_result_data() -> None:
    # Reqour's test resource result-with-complicated-name.json.
    data = {"name": "@redhat/artifactId", "version": "0.1.0-rh-00042", "dependenciesMap": {}, "devDependenciesMap": {}}
    result = repour_results.project_manipulator_result_data(data)
    assert result["VersioningState"] == {"executionRootModified": {"groupId": None, "artifactId": "@redhat/artifactId",
                                                                   "version": "0.1.0-rh-00042"}}
    assert result["RemovedRepositories"] == [] and result["dependenciesMap"] == {}
    assert repour_results.project_manipulator_result_data({}) == {}


BACKUP = b"""<?xml version="1.0"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0"><profiles><profile><repositories>
  <repository><id>jboss</id><name>JBoss</name><url>https://r.example/</url>
    <snapshots><enabled>false</enabled></snapshots></repository>
  <repository><id>other</id><url>https://o.example/</url>
    <releases><enabled>true</enabled></releases></repository>
</repositories></profile></profiles></settings>"""


def test_parse_removed_repositories() -> None:
    assert repour_results.parse_removed_repositories(BACKUP) == [
        REMOVED[0], {"releases": True, "snapshots": True, "name": "", "id": "other", "url": "https://o.example/"}]
    assert repour_results.parse_removed_repositories(b"not xml") == []


def test_removed_repositories_file_from_parameter(tmp_path: Path) -> None:
    (tmp_path / "backup.xml").write_bytes(BACKUP)
    assert repour_results.removed_repositories(tmp_path, ["-DrepoRemovalBackup=backup.xml"])[0]["id"] == "jboss"
    assert repour_results.removed_repositories(tmp_path, []) == []  # default file absent
    (tmp_path / "repositories-backup.xml").write_bytes(BACKUP)
    assert len(repour_results.removed_repositories(tmp_path, [])) == 2
    assert repour_results.removed_repositories(tmp_path, ["-DrepoRemovalBackup=../../etc/passwd"]) == []


def test_user_parameters_legacy_key() -> None:
    assert adjust.user_parameters("pme", {"CUSTOM_PME_PARAMETERS": "-Da=1"}) == ["-Da=1"]
    assert adjust.user_parameters("project-manipulator", {"CUSTOM_PME_PARAMETERS": "-Da=1"}) == []


def test_pme_reads_result_and_version(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    result = {"VersioningState": {"executionRootModified": {"groupId": "g", "artifactId": "a",
                                                            "version": "1.0.0.redhat-00001"}}}
    runner = FakeRunner({"target/pom-manip-ext-result.json": result})
    provider = adjust.Provider("pme", ("pme",))
    outcome = adjust.run_provider(provider, work, adjust.AdjustRequest(), _config(), runner, scratch)
    assert outcome == adjust.AdjustOutcome("pme", "1.0.0.redhat-00001", {**result, "RemovedRepositories": []})
    assert runner.calls[0][1] == work
    # The result file is a build output: it must not end up in the adjust commit.
    assert not (work / "target" / "pom-manip-ext-result.json").exists()
    # The tool never sees the server's secrets.
    assert "GITSERVER_DATABASE_URL" not in runner.calls[0][2] and runner.calls[0][2]["HOME"] == str(scratch)


def test_pme_file_parameter_moves_the_run(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    (work / "sub").mkdir(parents=True), scratch.mkdir()
    runner = FakeRunner()
    request = adjust.AdjustRequest(parameters={"ALIGNMENT_PARAMETERS": "--file=sub/pom.xml -Dx=1"})
    outcome = adjust.run_provider(adjust.Provider("pme", ("pme",)), work, request, _config(), runner, scratch)
    argv, cwd, _env = runner.calls[0]
    assert cwd == (work / "sub").resolve() and argv == ["pme", "-Dx=1"]
    assert outcome.version is None and outcome.result_data == {}
    with pytest.raises(repour_command.ProcessingError, match="outside"):
        adjust.run_provider(adjust.Provider("pme", ("pme",)), work,
                            adjust.AdjustRequest(parameters={"ALIGNMENT_PARAMETERS": "--file=../../etc/pom.xml"}),
                            _config(), runner, scratch)


def test_gme_keeps_manipulation_json(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    result = {"VersioningState": {"executionRootModified": {"version": "2.0.0.redhat-00002"}}}
    runner = FakeRunner({"manipulation.json": result})
    outcome = adjust.run_provider(adjust.Provider("gme", ("gme",)), work, adjust.AdjustRequest(build_type="GRADLE"),
                                  _config(), runner, scratch)
    assert outcome.version == "2.0.0.redhat-00002"
    assert (work / "manipulation.json").exists()
    assert f"--target={work}" in runner.calls[0][0]
    with pytest.raises(repour_command.ProcessingError, match=r"manipulation\.json"):
        adjust.run_provider(adjust.Provider("gme", ("gme",)), tmp_path / "scratch", adjust.AdjustRequest(),
                            _config(), FakeRunner(), scratch)


def test_project_manipulator_result_file_outside_tree(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    runner = FakeRunner({"--result": {"name": "pkg", "version": "1.2.3-redhat-00001"}})
    outcome = adjust.run_provider(adjust.Provider("project-manipulator", ("pm",)), work,
                                  adjust.AdjustRequest(build_type="NODEJS"), _config(), runner, scratch)
    assert outcome.version == "1.2.3-redhat-00001"
    result_arg = runner.calls[0][0][-1]
    assert result_arg.startswith(f"--result={scratch}")
    assert list(work.iterdir()) == []


def test_process_provider_environment(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    runner = FakeRunner({"$RESULT": {"version": "9.9"}})
    request = adjust.AdjustRequest(build_type="SBT", parameters={"X": "1"})
    outcome = adjust.run_provider(adjust.Provider("process", ("align",)), work, request, _config(), runner, scratch)
    assert outcome == adjust.AdjustOutcome("process", "9.9", {"version": "9.9"})
    env = runner.calls[0][2]
    assert env["GITSERVER_BUILD_TYPE"] == "SBT" and json.loads(env["GITSERVER_ADJUST_PARAMETERS"]) == {"X": "1"}


def test_tool_failure_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with pytest.raises(repour_command.ProcessingError) as info:
        adjust.run_provider(adjust.Provider("pme", ("pme", "-x")), tmp_path, adjust.AdjustRequest(), _config(),
                            FakeRunner(exit_code=3), tmp_path / "s")
    body = info.value.body()
    assert body["exit_code"] == 3 and body["cmd"] == ["pme", "-x"] and body["stderr"] == "boom"
    assert set(body) == {"desc", "cmd", "exit_code", "stderr", "error_type"}


def test_bad_result_file(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    runner = FakeRunner({"target/pom-manip-ext-result.json": ["not", "an", "object"]})
    with pytest.raises(repour_command.ProcessingError, match="not a JSON object"):
        adjust.run_provider(adjust.Provider("pme", ("pme",)), tmp_path, adjust.AdjustRequest(), _config(),
                            runner, tmp_path / "s")


def test_noop() -> None:
    assert adjust.run_provider(adjust.Provider("noop"), Path("/nonexistent"), adjust.AdjustRequest(), _config(),
                               FakeRunner(), Path("/nonexistent")) == adjust.AdjustOutcome("noop", None, {})


# --- the runner -------------------------------------------------------------------------------

def test_run_command_output_and_exit_code(tmp_path: Path) -> None:
    lines: list[str] = []
    result = repour_command.run_command([sys.executable, "-c", "import sys; print('hi'); sys.exit(4)"],
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30, output=lines.append)
    assert (result.exit_code, result.stdout) == (4, "hi\n")
    assert "hi" in lines[0]


def test_run_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    script = (f"import subprocess, sys; subprocess.Popen(['sh', '-c', 'sleep 3; touch {marker}']); "
              "import time; time.sleep(30)")
    started = time.monotonic()
    with pytest.raises(repour_command.ProcessingError) as info:
        repour_command.run_command([sys.executable, "-c", script], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                                   timeout=1)
    assert info.value.exit_code == 124 and time.monotonic() - started < 10
    time.sleep(3.5)
    assert not marker.exists(), "the tool's child survived the timeout"


def test_run_command_stop_check(tmp_path: Path) -> None:
    deadline = time.monotonic() + 0.5

    def stop() -> None:
        if time.monotonic() > deadline:
            raise JobCancelled("cancelled")

    started = time.monotonic()
    with pytest.raises(JobCancelled):
        repour_command.run_command(["sleep", "30"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60, stop=stop)
    assert time.monotonic() - started < 5


def test_run_command_missing_program(tmp_path: Path) -> None:
    with pytest.raises(repour_command.ProcessingError) as info:
        repour_command.run_command(["/nonexistent/tool"], cwd=tmp_path, env={}, timeout=5)
    assert info.value.exit_code == 127


@pytest.mark.parametrize("text, shown", [
    ("https://u:p@h/x", "https://***@h/x"),
    ("https://ghp_TOKEN@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("https://user:p@ss@host/r", "https://***@host/r"),
    ("ssh://git@host:22/r", "ssh://***@host:22/r"),
    ("fatal: unable to access 'https://tok:x@h/r/': 403", "fatal: unable to access 'https://***@h/r/': 403"),
    ("a https://a:b@h1/x and git://c@h2/y", "a https://***@h1/x and git://***@h2/y"),
    ("https://h/x?u=a@b", "https://h/x?u=a@b"),
    ("-Dx=1", "-Dx=1"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
])
def test_redact_hides_every_url_credential(text: str, shown: str) -> None:
    assert repour_command.redact(text) == shown


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_run_command_child_dies_with_the_process_running_it(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.conftest import wait_for

    pid_file = tmp_path / "tool.pid"
    # A helper process that runs a long "alignment tool" through run_command (from a thread,
    # as worker and gunicorn threads do; the thread outlives the call), then is SIGKILLed.
    helper_code = (
        "import sys, threading, pathlib\n"
        "from gitserver.repour import command as repour_command\n"
        "def go():\n"
        "    repour_command.run_command(['sh', '-c', 'echo $$ > " + str(pid_file) + "; exec sleep 600'],\n"
        "                       cwd=pathlib.Path(sys.argv[1]), env={'PATH': '/usr/bin:/bin'}, timeout=600)\n"
        "t = threading.Thread(target=go); t.start(); t.join()\n")
    helper = subprocess.Popen([sys.executable, "-c", helper_code, str(tmp_path)],
                              cwd=Path(__file__).resolve().parents[2])
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=20)
        tool = int(pid_file.read_text())
        assert _running(tool)
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait(10)
        deadline = time.monotonic() + 2
        while _running(tool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(tool), "the tool outlived the process that ran it"
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
        if pid_file.exists() and _running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_result_file_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The tool writes its result file in its sandbox; a link it makes there to a server file
    (here PME's target/ pointing elsewhere) is refused, never read as the server."""
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    server_file = tmp_path / "server" / "pom-manip-ext-result.json"
    server_file.parent.mkdir()
    server_file.write_text(json.dumps({"VersioningState": {"executionRootModified": {"version": "leaked"}}}))

    def tool(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> repour_command.CommandResult:
        (cwd / "target").symlink_to(server_file.parent)
        return repour_command.CommandResult(list(argv), 0, "", "")

    with pytest.raises(repour_command.ProcessingError,
                       match=r"pom-manip-ext-result\.json is a symbolic link or lies under one"):
        adjust.run_provider(adjust.Provider("pme", ("pme",)), work, adjust.AdjustRequest(), _config(), tool, scratch)
    assert server_file.exists()  # (and not removed either)


def test_smeg_runs_sbt_tasks_and_reads_its_report(tmp_path: Path) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir(), scratch.mkdir()
    report = {"VersioningState": {"executionRootModified": {"groupId": "org.scala", "artifactId": "lib",
                                                            "version": "2.0.0.redhat-00003"}},
              "RemovedRepositories": []}
    runner = FakeRunner({"manipulations.json": report})
    request = adjust.AdjustRequest(build_type="SBT", parameters={"ALIGNMENT_PARAMETERS": "-DrestMode=PERSISTENT"})
    outcome = adjust.run_provider(adjust.Provider("smeg", ("sbt",), ("-Dx=1",)), work, request, _config(),
                                  runner, scratch)
    assert outcome == adjust.AdjustOutcome("smeg", "2.0.0.redhat-00003", report)
    assert runner.calls[0][0] == ["sbt", "-Dx=1", "-DrestMode=PERSISTENT", "manipulate", "writeReport"]
    assert not (work / "manipulations.json").exists()
    with pytest.raises(repour_command.ProcessingError, match="dash"):
        adjust.user_parameters("smeg", {"ALIGNMENT_PARAMETERS": "compile"})


def test_files_the_tool_wrote_are_read_within_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server reads at most MAX_RESULT_BYTES (+1) of what the tool left: a result file over it
    is the tool's failure, not the server's memory."""
    monkeypatch.setattr(repour_results, "MAX_RESULT_BYTES", 64)
    big = tmp_path / "result.json"
    big.write_text(json.dumps({"version": "1", "pad": "x" * 100}))
    with pytest.raises(repour_command.ProcessingError, match="larger than 64 bytes"):
        repour_results.read_json_file(big)
    assert len(repour_results.read_bounded(big)) == 65
