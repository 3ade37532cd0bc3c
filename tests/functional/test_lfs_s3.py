"""LFS objects in S3-compatible object storage, with the real git-lfs client over SSH through
``git-lfs-authenticate`` (the pure SSH protocol turned off on this server), on SQLite and
PostgreSQL.

moto's standalone server (``moto[server]``, started here as a real process on a loopback port)
stands in for S3 because no S3 service can run here; gitserver talks to it with boto3 exactly
as it would to S3 or MinIO, and the client downloads from it through presigned URLs.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.conftest import GitServer
from tests.functional.lfs_support import (
    MotoS3,
    lfs_home,
    lfs_worktree,
    moto_s3,
    oid,
    pushed_lfs_repo,
    require_git_lfs,
    run,
    ssh_env,
    stored_objects,
)

BUCKET = "gitserver-lfs"
PREFIX = "objects"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    yield from moto_s3(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def s3_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, s3: MotoS3,
              git_env: dict[str, str]) -> Iterator[GitServer]:
    require_git_lfs()
    bucket = f"{BUCKET}-{request.param}"
    s3.client().create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp(f"lfs-s3-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    overrides = {
        "GITSERVER_LFS_STORE": f"s3://{bucket}/{PREFIX}", "GITSERVER_LFS_S3_ENDPOINT_URL": s3.url,
        "GITSERVER_LFS_S3_REGION": "us-east-1", "GITSERVER_LFS_S3_ACCESS_KEY_ID": "testing",
        "GITSERVER_LFS_S3_SECRET_ACCESS_KEY": "testing", "GITSERVER_LFS_SSH_TRANSFER": "0"}
    srv = GitServer(root / "data", db_url, git_env, extra_env=overrides)
    srv.bucket = bucket  # type: ignore[attr-defined]
    srv.env_overrides = overrides  # type: ignore[attr-defined]
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_push_and_clone_through_git_lfs_authenticate_with_objects_in_s3(
        s3_server: GitServer, s3: MotoS3, tmp_path: Path, git_env: dict[str, str]) -> None:
    env = lfs_home(tmp_path, git_env)
    tenant = s3_server.new_tenant()
    user = s3_server.new_user(tenant)
    repo = s3_server.new_repo(tenant, grants={user.name: "write"})
    data = b"s3" * 400_000
    work = lfs_worktree(tmp_path / "work", env, {"model.bin": data})
    traced = {**ssh_env(s3_server, user, env), "GIT_TRACE": "1"}
    pushed = run(["git", "push", s3_server.repo_url(tenant, repo), "main"], traced, cwd=work)
    assert "git-lfs-authenticate" in pushed.stderr, pushed.stderr

    key = f"{PREFIX}/{oid(data)[:2]}/{oid(data)[2:4]}/{oid(data)}"
    head = s3.client().head_object(Bucket=s3_server.bucket, Key=key)  # type: ignore[attr-defined]
    assert head["ContentLength"] == len(data)
    assert stored_objects(s3_server) == set()  # nothing on the local disk but in passing

    clone = tmp_path / "clone"
    cloned = run(["git", "clone", s3_server.repo_url(tenant, repo), str(clone)], traced)
    assert (clone / "model.bin").read_bytes() == data
    assert f"127.0.0.1:{s3.port}" in cloned.stderr  # fetched from the bucket, presigned


def test_the_s3_store_keeps_only_verified_objects(s3: MotoS3, tmp_path: Path) -> None:
    """The store alone against the same server: a wrong upload leaves no key in the bucket."""
    from gitserver import config as config_mod
    from gitserver.lfs import s3 as s3_store
    from gitserver.lfs.store import ObjectMismatch

    s3.client().create_bucket(Bucket="store-test")
    config = config_mod.load(environ={}, data_dir=str(tmp_path), lfs_s3_endpoint_url=s3.url,
                             lfs_s3_region="us-east-1", lfs_s3_access_key_id="testing",
                             lfs_s3_secret_access_key="testing")
    objects = s3_store.S3Store.from_config(config, "s3://store-test/some/prefix/")
    data = b"object bytes" * 1000
    incoming = objects.receive(oid(data), len(data))
    incoming.write(data[:-1] + b"?")
    with pytest.raises(ObjectMismatch):
        objects.finish(incoming)
    assert not objects.exists(oid(data))
    assert s3.client().list_objects_v2(Bucket="store-test").get("KeyCount") == 0
    incoming = objects.receive(oid(data), len(data))
    incoming.write(data)
    objects.finish(incoming)
    assert objects.exists(oid(data)) and objects.open(oid(data)).read() == data
    assert objects.key(oid(data)).startswith("some/prefix/")
    assert list((tmp_path / "lfs" / "tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        objects.open("0" * 64)


def test_backup_copies_the_bucket_objects_and_restore_puts_them_into_the_configured_bucket(
        request: pytest.FixtureRequest, s3_server: GitServer, s3: MotoS3, tmp_path: Path,
        git_env: dict[str, str]) -> None:
    """A backup of a server whose objects are in S3 restores without that bucket: the objects
    are members of the file, and restore uploads them into the restoring server's bucket."""
    from tests.functional.test_backup import fresh_database

    env = lfs_home(tmp_path, git_env)
    data = b"backed up " * 60_000
    pushed = pushed_lfs_repo(s3_server, tmp_path, env, {"model.bin": data})
    tenant, user, repo = pushed.tenant, pushed.user, pushed.repo
    backup_file = tmp_path / "backup.tar"
    s3_server.cli("backup", str(backup_file))
    with tarfile.open(backup_file) as tar:
        member = tar.extractfile(f"lfs/{oid(data)}")
        assert member is not None and member.read() == data

    bucket = f"restored-{s3_server.bucket}"  # type: ignore[attr-defined]
    s3.client().create_bucket(Bucket=bucket)
    settings = {**s3_server.env_overrides, "GITSERVER_LFS_STORE": f"s3://{bucket}/{PREFIX}"}  # type: ignore[attr-defined]
    restored = GitServer(tmp_path / "b" / "data", fresh_database(request, s3_server.db_url, tmp_path, "restored"),
                         git_env, extra_env=settings)
    try:
        result = restored.cli("restore", str(backup_file))
        assert "restored" in result.stdout, result.stdout + result.stderr
        key = f"{PREFIX}/{oid(data)[:2]}/{oid(data)[2:4]}/{oid(data)}"
        assert s3.client().get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert stored_objects(restored) == set()  # nothing kept on the local disk
        restored.start()
        clone = tmp_path / "clone"
        run(["git", "clone", "-q", restored.repo_url(tenant, repo), str(clone)], ssh_env(restored, user, env))
        assert (clone / "model.bin").read_bytes() == data
    finally:
        restored.stop()

    # A damaged object in the bucket fails the backup, and no file is left.
    s3.client().put_object(Bucket=s3_server.bucket, Key=key, Body=data[:-1] + b"!")  # type: ignore[attr-defined]
    damaged = s3_server.cli("backup", str(tmp_path / "damaged.tar"), check=False)
    assert damaged.returncode != 0 and f"LFS object {oid(data)}" in damaged.stderr, damaged.stderr
    assert "damaged" in damaged.stderr and not (tmp_path / "damaged.tar").exists()
    s3.client().put_object(Bucket=s3_server.bucket, Key=key, Body=data)  # type: ignore[attr-defined]
