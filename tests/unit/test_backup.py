"""The backup file's format, the PostgreSQL tool helpers and the ledger read, without a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gitserver.backup import database
from gitserver.backup import format as fmt
from gitserver.backup.ledger import read_ledger
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.runtime import Runtime
from tests.unit.conftest import make_runtime

A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.mark.parametrize("name,kind", [
    ("gitserver-backup.json", "manifest"),
    ("SHA256SUMS", "sums"),
    ("database/gitserver.sqlite3", "database"),
    ("database/postgresql.dump", "database"),
    ("ssh/ssh_host_ed25519_key", "host_key"),
    ("ssh/ssh_host_ed25519_key.pub", "host_key"),
    ("repos/acme/app.git/refs", "refs"),
    ("repos/acme/app.git/objects.pack", "pack"),
])
def test_classify_accepts_what_a_backup_holds(name: str, kind: str) -> None:
    assert fmt.classify(name).kind == kind


@pytest.mark.parametrize("name", [
    "../etc/passwd", "/etc/passwd", "repos/../x.git/refs", "repos/acme/..git/refs",
    "repos/acme/app/refs", "repos/acme/app.git/config", "repos/acme/app.git/hooks/pre-receive",
    "repos/-x/app.git/refs", "repos/acme/a.git.git/refs", "ssh/authorized_keys", "ssh/../x",
    "database/other.db", "repos/acme/app.git/refs/extra", "", "SHA256SUMS/",
])
def test_classify_refuses_anything_else(name: str) -> None:
    with pytest.raises(fmt.FormatError):
        fmt.classify(name)


def test_refs_file_round_trips() -> None:
    refs = fmt.RepoRefs(head="refs/heads/main", refs={"refs/tags/v1": B, "refs/heads/main": A})
    data = refs.render()
    assert data == f"ref: refs/heads/main\n{A} refs/heads/main\n{B} refs/tags/v1\n".encode()
    assert fmt.RepoRefs.parse(data, "x") == refs


@pytest.mark.parametrize("data,problem", [
    (b"", "first line"),
    (f"{A} refs/heads/main\n".encode(), "first line"),
    (b"ref: main\n", "HEAD"),
    (b"ref: refs/heads/main\nxyz refs/heads/main\n", "line 2"),
    (f"ref: refs/heads/main\n{A} refs/heads/a..b\n".encode(), "line 2"),
    (f"ref: refs/heads/main\n{A} refs/heads/x\n{B} refs/heads/x\n".encode(), "twice"),
    ("ref: refs/heads/mäin\n".encode(), "ASCII"),
])
def test_refs_file_refuses_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(fmt.FormatError, match=problem):
        fmt.RepoRefs.parse(data, "acme/app refs")


def test_sums_round_trip_and_refuse_malformed() -> None:
    sums = {"gitserver-backup.json": "0" * 64, "repos/a/b.git/refs": "f" * 64}
    assert fmt.parse_sums(fmt.render_sums(sums)) == sums
    for bad in (b"zz  name\n", b"0" * 64 + b" name\n", b"0" * 64 + b"  \n"):
        with pytest.raises(fmt.FormatError, match="SHA256SUMS line 1"):
            fmt.parse_sums(bad)


def test_manifest_round_trips_and_names_what_is_wrong() -> None:
    manifest = fmt.Manifest(dialect="sqlite", created_at="2026-11-26T00:00:00+00:00",
                            gitserver_version="0.1.0", schema_revision="0002", repositories=3)
    assert fmt.Manifest.from_json(manifest.to_json()) == manifest
    for data, problem in [(b"{", "not valid JSON"), (b"{}", "not a gitserver backup"),
                          (b'{"format": "gitserver-backup", "format_version": 99}', "version 99"),
                          (b'{"format": "gitserver-backup", "format_version": 1, "dialect": "mysql"}', "mysql")]:
        with pytest.raises(fmt.FormatError, match=problem):
            fmt.Manifest.from_json(data)


@pytest.mark.parametrize("output,major", [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15),
    ("pg_restore (PostgreSQL) 17.2\n", 17),
    ("pg_dump (PostgreSQL) 9.6.24\n", 9),
    ("pg_dump: command not found", None),
])
def test_parse_tool_major(output: str, major: int | None) -> None:
    assert database.parse_tool_major(output) == major


def test_pg_conninfo_keeps_the_password_off_the_command_line() -> None:
    conninfo, env = database.pg_conninfo("postgresql+psycopg://gs:s3cr'et@db.example:5433/git?sslmode=require")
    assert conninfo == "host='db.example' port='5433' user='gs' dbname='git' sslmode='require'"
    assert env == {"PGPASSWORD": "s3cr'et"}
    conninfo, env = database.pg_conninfo("postgresql+psycopg:///git?host=/run/pg%20sock")
    assert conninfo == "dbname='git' host='/run/pg sock'" and env == {}


def test_pg_tool_names_the_version_it_needs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="pg_dump of PostgreSQL 99 \\(or newer\\) was not found"):
        database.pg_tool("pg_dump", 99, search_path=str(tmp_path))


@pytest.fixture()
def runtime(tmp_path) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = make_runtime(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    yield rt
    rt.dispose()


def test_ledger_is_the_last_recorded_value_of_each_ref_and_the_archives(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        tenant = models.Tenant(name="acme")
        session.add(tenant)
        session.flush()
        app = models.Repository(tenant_id=tenant.id, name="app")
        empty = models.Repository(tenant_id=tenant.id, name="empty")
        session.add_all([app, empty])
        session.flush()
        for updates in ([("0" * 40, A, "refs/heads/main")],
                        [(A, B, "refs/heads/main"), ("0" * 40, C, "refs/tags/v1")]):
            push = models.Push(repo_id=app.id)
            push.ref_updates = [models.RefUpdate(ref=r, old=o, new=n) for o, n, r in updates]
            session.add(push)
        if hasattr(models.Push, "state"):  # an intent whose refs never moved is not in the ledger
            pending = models.Push(repo_id=app.id, state=models.PUSH_PENDING)  # type: ignore[attr-defined]
            pending.ref_updates = [models.RefUpdate(ref="refs/heads/main", old=B, new=C)]
            session.add(pending)
        session.add(models.Archive(repo_id=app.id, tree_id="d" * 40, tag=f"repour-{A}", commit_id=A))
    with runtime.sessions() as session:
        ledgers = read_ledger(session)
    assert [(entry.tenant, entry.name) for entry in ledgers] == [("acme", "app"), ("acme", "empty")]
    assert ledgers[0].refs == {"refs/heads/main": B, "refs/tags/v1": C}
    assert ledgers[0].archives == [(f"repour-{A}", A)]
    assert ledgers[1].refs == {} and ledgers[1].archives == []


def test_a_backup_of_another_database_kind_or_a_newer_schema_is_refused_before_anything_is_written() -> None:
    from gitserver.backup.run import _check_compatible
    from gitserver.policy.errors import BackupError

    manifest = fmt.Manifest(dialect="sqlite", created_at="2026-11-26T00:00:00+00:00",
                            gitserver_version="0.1.0", schema_revision="0001", repositories=0)
    _check_compatible(manifest, "sqlite")
    with pytest.raises(BackupError, match="holds a sqlite database and the target is postgresql"):
        _check_compatible(manifest, "postgresql")
    newer = fmt.Manifest(dialect="sqlite", created_at="2026-11-26T00:00:00+00:00",
                         gitserver_version="9.0", schema_revision="9999_future", repositories=0)
    with pytest.raises(BackupError, match=r"made by a newer gitserver \(9.0, schema 9999_future\)"):
        _check_compatible(newer, "sqlite")


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_a_sparse_member_is_refused_before_anything_is_written(tmp_path, tar_format: str) -> None:  # type: ignore[no-untyped-def]
    # Issue 21: ~10 KiB in the file became 3 GiB in staging before the checksums refused it.
    import io

    from gitserver.backup.run import _read_stream
    from gitserver.policy.errors import BackupError
    from tests.backup_files import SPARSE_SIZE, with_sparse_member

    manifest = fmt.Manifest(dialect="sqlite", created_at="2026-11-26T00:00:00+00:00",
                            gitserver_version="0.1.0", schema_revision="0001", repositories=0)
    crafted = with_sparse_member(manifest.to_json(), tmp_path / "src", tar_format)
    assert len(crafted) < 64 * 1024 < SPARSE_SIZE
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(BackupError, match=r"not valid: member 'database/gitserver.sqlite3' is a sparse file"):
        _read_stream(io.BytesIO(crafted), staging)
    assert [p for p in staging.rglob("*") if p.is_file()] == []


def test_a_malformed_refs_file_is_a_backup_error_naming_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gitserver.backup.run import _parse_refs
    from gitserver.policy.errors import BackupError

    refs = tmp_path / "refs"
    refs.write_bytes(b"ref: refs/heads/main\n" + f"{A} refs/heads/main\nnot-an-id refs/heads/x\n".encode())
    with pytest.raises(BackupError, match=r"not valid: acme/app refs line 3: expected '<object id> <ref>'"):
        manifest = fmt.Manifest("sqlite", "2026-01-01T00:00:00+00:00", "0", "0023", 1)
        _parse_refs(manifest, {("acme", "app"): {"refs": refs}})
