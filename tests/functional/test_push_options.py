"""``git push -o``: advertised, stored on the push, ``ci.skip`` and ``ci.variable`` acting on
the build, a bad ``ci.*`` option refused with its reason."""

from __future__ import annotations

from pathlib import Path

from tests.functional.conftest import GitServer, commit_files
from tests.functional.test_pipelines import pushed_pipeline_id, setup_repo, wait_pipeline
from tests.functional.test_pipelines_build import full_log

PIPELINE = '[[steps]]\nname = "say"\ncommand = "echo greeting=$GREETING mode=$MODE"\nenv = { MODE = "file" }\n'


def _pushes(server: GitServer, tenant: str, repo: str) -> list[dict[str, object]]:
    return server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/pushes").json()["items"]


def test_ci_skip_archives_without_building(server: GitServer, git_env: dict[str, str],
                                           tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                          files={".gitserver/pipeline.toml": PIPELINE})
    result = server.git(user, "push", "-o", "ci.skip", "-o", "topic=docs", "origin", "main", cwd=work)
    pipeline = wait_pipeline(server, pushed_pipeline_id(result.stderr))
    assert pipeline.status == "succeeded" and pipeline.archive_tag
    steps = server.api("GET", f"/api/v1/pipelines/{pipeline.id}").json()["steps"]
    assert [s["name"] for s in steps] == ["archive"]
    assert "not built: the push asked for it (ci.skip)" in full_log(server, pipeline.id)
    assert _pushes(server, tenant, repo)[0]["push_options"] == ["ci.skip", "topic=docs"]
    # a push without options records none
    commit_files(work, git_env, {"c.txt": "c\n"})
    server.git(user, "push", "origin", "main", cwd=work)
    assert sorted(len(p["push_options"]) for p in _pushes(server, tenant, repo)) == [0, 2]


def test_ci_variable_reaches_build_steps(server: GitServer, git_env: dict[str, str],
                                         tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, builds=True,
                                          files={".gitserver/pipeline.toml": PIPELINE})
    result = server.git(user, "push", "-o", "ci.variable=GREETING=hello world",
                        "-o", "ci.variable=MODE=push", "origin", "main", cwd=work)
    pipeline = wait_pipeline(server, pushed_pipeline_id(result.stderr))
    log = full_log(server, pipeline.id)
    assert pipeline.status == "succeeded", log
    assert "greeting=hello world mode=push" in log  # the push's value wins over the file's
    # A push without options builds with the file's environment only.
    commit_files(work, git_env, {"b.txt": "b\n"})
    plain = wait_pipeline(server, pushed_pipeline_id(server.git(user, "push", "origin", "main",
                                                                cwd=work).stderr))
    assert "greeting= mode=file" in full_log(server, plain.id)
    assert [p["push_options"] for p in _pushes(server, tenant, repo)] in (
        [[], ["ci.variable=GREETING=***", "ci.variable=MODE=***"]],
        [["ci.variable=GREETING=***", "ci.variable=MODE=***"], []])  # values are secrets


def test_bad_ci_option_refuses_the_push(server: GitServer, git_env: dict[str, str],
                                        tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    result = server.git(user, "push", "-o", "ci.variable=GITSERVER_TAG=x", "origin", "main",
                        cwd=work, check=False)
    assert result.returncode != 0
    assert ("! [remote rejected] main -> main (push option refused: ci.variable: GITSERVER_TAG "
            "is reserved (GITSERVER_*))") in result.stderr
    assert server.git(user, "ls-remote", "origin", cwd=work).stdout == ""
    assert _pushes(server, tenant, repo) == []
