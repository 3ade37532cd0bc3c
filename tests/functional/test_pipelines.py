"""Push-triggered pipelines through the real ``gitserver serve``: archive tags, dedup by tree,
shallow clones by tag, builds, the pipeline API."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pygit2
from sqlalchemy import select

from gitserver.db import models
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo

FINAL = ("succeeded", "failed", "cancelled")


def wait_pipeline(server: GitServer, pipeline_id: int, timeout: float = 60.0,
                  statuses: tuple[str, ...] = FINAL) -> models.Pipeline:
    def done() -> models.Pipeline | None:
        with server.db() as session:
            row = session.get(models.Pipeline, pipeline_id)
            if row is not None and row.status in statuses:
                session.expunge(row)
                return row
        return None

    return wait_for(done, timeout=timeout, interval=0.1,
                    what=f"pipeline {pipeline_id} to reach {statuses}\n{server.logs()}")


def pushed_pipeline_id(stderr: str) -> int:
    """The id from ``remote: pipeline N queued: <url>`` in git push output."""
    for line in stderr.splitlines():
        if "pipeline " in line and " queued: " in line:
            return int(line.split("pipeline ", 1)[1].split()[0])
    raise AssertionError(f"no pipeline line in push output:\n{stderr}")


def push(server: GitServer, user: User, work: Path, *refspecs: str) -> int:
    result = server.git(user, "push", "origin", *refspecs, cwd=work)
    return pushed_pipeline_id(result.stderr)


def object_count(repo_path: Path) -> int:
    """The repository's objects, but for the reference log's and the attestation notes' (every
    push adds its log entry and notes: docs/provenance.md)."""
    every = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"],
                           cwd=repo_path, capture_output=True, text=True, check=True).stdout.split()
    tips = [ref for ref in ("refs/gitserver/log", "refs/notes/attestations")
            if subprocess.run(["git", "rev-parse", "-q", "--verify", ref], cwd=repo_path,
                              capture_output=True).returncode == 0]
    listed = subprocess.run(["git", "rev-list", "--objects", *tips], cwd=repo_path, capture_output=True,
                            text=True, check=True).stdout if tips else ""
    server_own = {line.split()[0] for line in listed.splitlines()}
    return len(set(every) - server_own)


def setup_repo(server: GitServer, git_env: dict[str, str], tmp_path: Path,
               files: dict[str, str] | None = None, builds: bool = False) -> tuple[str, str, User, Path]:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, builds=builds)
    work = make_repo(tmp_path / "work", git_env, files or {"README.md": "hello\n", "src/a.txt": "a\n"})
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return tenant, repo, user, work


def rev(work: Path, git_env: dict[str, str], spec: str) -> str:
    return subprocess.run(["git", "rev-parse", spec], cwd=work, env=git_env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_push_archives_tree_under_immutable_tag(server: GitServer, git_env: dict[str, str],
                                                tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    commit = rev(work, git_env, "HEAD")
    tree = rev(work, git_env, "HEAD^{tree}")
    t0 = time.monotonic()
    pid = push(server, user, work, "main")
    pushed = time.monotonic()
    git = pygit2.Repository(str(server.repo_path(tenant, repo)))

    def tag_visible() -> str | None:
        names = [r for r in git.references if r.startswith("refs/tags/repour-")]
        return names[0] if names else None

    tag_ref = wait_for(tag_visible, timeout=30, interval=0.02, what="archive tag")
    latency = time.monotonic() - pushed
    print(f"\npipeline latency (push accepted -> archive tag visible): {latency * 1000:.0f} ms "
          f"(push itself {1000 * (pushed - t0):.0f} ms)")
    pipeline = wait_pipeline(server, pid)
    assert pipeline.status == "succeeded", pipeline.error
    assert pipeline.ref == "refs/heads/main" and pipeline.commit == commit
    assert tag_ref == f"refs/tags/{pipeline.archive_tag}"
    # The tag: annotated, on an orphan commit with the pushed tree and fixed metadata.
    tag = git[git.references[tag_ref].target]
    assert isinstance(tag, pygit2.Tag)
    assert f"{tenant}/{repo}" in tag.message and "refs/heads/main" in tag.message and commit in tag.message
    archived = tag.peel(pygit2.Commit)
    assert str(archived.tree_id) == tree and archived.parents == []
    assert (archived.author.name, archived.author.time, archived.committer.time) == ("gitserver", 0, 0)
    assert pipeline.archive_tag == f"repour-{archived.id}"
    assert git.references.get(f"refs/heads/branch-repour-{archived.id}") is not None
    # Visible to clients, too.
    remote = server.git(user, "ls-remote", server.repo_url(tenant, repo)).stdout
    assert pipeline.archive_tag in remote and f"branch-repour-{archived.id}" in remote
    with server.db() as session:
        rows = session.scalars(select(models.Archive).where(
            models.Archive.repo_id == pipeline.repo_id, models.Archive.tree_id == tree)).all()
        assert [(a.tag, a.source_commit, a.source_ref) for a in rows] == [
            (pipeline.archive_tag, commit, "refs/heads/main")]
        steps = session.scalars(select(models.Step).where(models.Step.pipeline_id == pid)).all()
        assert [(s.name, s.status) for s in steps] == [("archive", "succeeded")]


def test_same_tree_same_tag_and_nothing_new(server: GitServer, git_env: dict[str, str],
                                            tmp_path: Path) -> None:
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path)
    first = wait_pipeline(server, push(server, user, work, "main"))
    assert first.status == "succeeded"
    repo_path = server.repo_path(tenant, repo)
    before_objects = object_count(repo_path)
    before_refs = sorted(pygit2.Repository(str(repo_path)).references)
    # The same commit on another branch: same tree, same tag, no new objects or archive refs.
    second = wait_pipeline(server, push(server, user, work, "main:refs/heads/other"))
    assert second.status == "succeeded" and second.archive_tag == first.archive_tag
    assert object_count(repo_path) == before_objects
    assert sorted(pygit2.Repository(str(repo_path)).references) == sorted(
        {*before_refs, "refs/heads/other"})
    # A different commit with the same tree (empty commit): still the same tag.
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "same tree"], cwd=work,
                   env=git_env, check=True)
    third = wait_pipeline(server, push(server, user, work, "main"))
    assert third.status == "succeeded" and third.archive_tag == first.archive_tag
    # Only the pushed commit object is new: the archive created nothing.
    assert object_count(repo_path) == before_objects + 1
    with server.db() as session:
        assert len(session.scalars(select(models.Archive).where(
            models.Archive.repo_id == first.repo_id,
            models.Archive.tag == first.archive_tag)).all()) == 1
    # A different tree gets a new tag.
    commit_files(work, git_env, {"src/a.txt": "changed\n"})
    fourth = wait_pipeline(server, push(server, user, work, "main"))
    assert fourth.status == "succeeded" and fourth.archive_tag not in ("", first.archive_tag)


def test_shallow_clone_by_tag_equals_pushed_tree(server: GitServer, git_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    files = {"README.md": "hello\n", "dir/b.bin": "x" * 1000, "dir/sub/c.txt": "c\n"}
    tenant, repo, user, work = setup_repo(server, git_env, tmp_path, files)
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    assert pipeline.status == "succeeded"
    clone = tmp_path / "clone"
    server.git(user, "clone", "--depth", "1", "--branch", pipeline.archive_tag,
               server.repo_url(tenant, repo), str(clone))
    assert rev(clone, git_env, "HEAD^{tree}") == rev(work, git_env, "HEAD^{tree}")
    assert (clone / "dir/sub/c.txt").read_text() == "c\n"
    log = subprocess.run(["git", "log", "--format=%an %ae %aI", "HEAD"], cwd=clone, env=git_env,
                         capture_output=True, text=True, check=True).stdout.split("\n")[0]
    assert log == "gitserver gitserver@localhost 1970-01-01T00:00:00+00:00"


def test_push_of_several_refs_archives_each(server: GitServer, git_env: dict[str, str],
                                            tmp_path: Path) -> None:
    _tenant, _repo, user, work = setup_repo(server, git_env, tmp_path)
    subprocess.run(["git", "branch", "feature"], cwd=work, env=git_env, check=True)
    commit_files(work, git_env, {"new.txt": "new\n"})
    subprocess.run(["git", "tag", "-a", "v1", "-m", "v1"], cwd=work, env=git_env, check=True)
    pipeline = wait_pipeline(server, push(server, user, work, "main", "feature", "v1"))
    assert pipeline.status == "succeeded"
    archives = json.loads(pipeline.result)["archives"]
    assert sorted(a["ref"] for a in archives) == ["refs/heads/feature", "refs/heads/main", "refs/tags/v1"]
    tags = {a["ref"]: a["tag"] for a in archives}
    assert tags["refs/tags/v1"] == tags["refs/heads/main"] != tags["refs/heads/feature"]
