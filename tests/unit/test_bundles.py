"""The bundles maintenance writes (gitserver.git.bundles), with the real git binary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gitserver import config as config_mod
from gitserver.git import bundles
from gitserver.pipelines import maintain as maintain_jobs
from tests.unit.test_maintain import git, many_packs  # noqa: F401  (the fixture)


def test_a_full_bundle_carries_every_branch_and_tag_and_needs_nothing(many_packs: Path,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    git("--git-dir", str(many_packs), "tag", "repour-1", "refs/heads/b2")
    dest = bundles.bundle_path(tmp_path / "bundles", "acme", "widgets")
    assert bundles.write_bundle(many_packs, dest, timeout=120)
    assert dest == tmp_path / "bundles" / "acme" / "widgets.bundle"
    heads = git("bundle", "list-heads", str(dest)).split()[1::2]
    assert sorted(heads) == sorted([*(f"refs/heads/b{i}" for i in range(6)), "refs/tags/repour-1"])
    verify = git("init", "-q", "--bare", str(tmp_path / "empty.git"))
    assert verify == ""
    git("--git-dir", str(tmp_path / "empty.git"), "bundle", "verify", "-q", str(dest))  # no prerequisites
    assert [p.name for p in dest.parent.iterdir()] == ["widgets.bundle"]  # no temporary left


def test_an_empty_repository_gets_no_bundle(tmp_path: Path) -> None:
    git("init", "-q", "--bare", str(tmp_path / "e.git"))
    dest = tmp_path / "b" / "t" / "e.bundle"
    assert not bundles.write_bundle(tmp_path / "e.git", dest, timeout=60)
    assert not dest.exists()


def test_a_failed_write_keeps_the_old_bundle(many_packs: Path, tmp_path: Path) -> None:  # noqa: F811
    dest = tmp_path / "b" / "t" / "r.bundle"
    assert bundles.write_bundle(many_packs, dest, timeout=120)
    old = dest.read_bytes()
    (many_packs / "refs" / "heads" / "broken").write_text("1" * 40 + "\n")  # an object it lacks
    with pytest.raises(bundles.BundleError, match="git bundle create failed"):
        bundles.write_bundle(many_packs, dest, timeout=120)
    assert dest.read_bytes() == old
    assert [p.name for p in dest.parent.iterdir()] == ["r.bundle"]


@pytest.mark.parametrize("name", ["..", "a/b", ""])
def test_bundle_paths_refuse_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(Exception, match="repository"):
        bundles.bundle_path(tmp_path, "acme", name)


def test_maintenance_refreshes_the_bundle(tmp_path: Path) -> None:
    repos = tmp_path / "data" / "repos" / "acme"
    repos.mkdir(parents=True)
    bare = repos / "widgets.git"
    git("init", "-q", "--bare", str(bare))
    work = tmp_path / "w"
    git("init", "-q", "-b", "main", str(work))
    git("commit", "-q", "--allow-empty", "-m", "one", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    cfg = dataclasses.replace(config_mod.Config(), data_dir=tmp_path / "data")
    maintain_jobs.maintain_repo(bare, cfg, label="acme/widgets")
    dest = tmp_path / "data" / "bundles" / "acme" / "widgets.bundle"
    first = git("bundle", "list-heads", str(dest))
    git("commit", "-q", "--allow-empty", "-m", "two", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    maintain_jobs.maintain_repo(bare, cfg, label="acme/widgets")
    second = git("bundle", "list-heads", str(dest))
    assert first != second
    assert second.split()[0] == git("--git-dir", str(bare), "rev-parse", "main").strip()
