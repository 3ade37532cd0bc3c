"""Push limits (gitserver.push.limits): the refusal rules as a table, the environment round
trip, what proc-receive answers when a push is over a limit, and the disk measurement."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from gitserver.push import limits
from gitserver.push.hookrun import pre_receive
from gitserver.push.limits import Measured, PushLimits

MiB = 1024 * 1024
Z, A = "0" * 40, "a" * 40
BLOB = "b" * 40


@pytest.mark.parametrize("lim, measured, expect", [
    (PushLimits(), Measured(10**12, (BLOB, 10**12), 10**12, 10**12), None),
    (PushLimits(max_blob_bytes=100 * MiB), Measured(MiB, (BLOB, 100 * MiB)), None),
    (PushLimits(max_blob_bytes=100 * MiB), Measured(MiB, (BLOB, 100 * MiB + 1)),
     f"push refused: GITSERVER_MAX_BLOB_BYTES is 100.0 MiB (104857600 bytes); blob {BLOB} is "
     "100.0 MiB (104857601 bytes)"),
    (PushLimits(max_push_bytes=2048), Measured(2049),
     "push refused: GITSERVER_MAX_PUSH_BYTES is 2.0 KiB (2048 bytes); the pushed objects take "
     "2.0 KiB (2049 bytes)"),
    (PushLimits(repo_quota_bytes=1000), Measured(500, repo_bytes=500), None),
    (PushLimits(repo_quota_bytes=1000), Measured(501, repo_bytes=500),
     "push refused: the quota_bytes of repository t/r is 1000 bytes; it would grow from 500 bytes "
     "to 1001 bytes"),
    (PushLimits(tenant_quota_bytes=1000), Measured(501, tenant_bytes=500),
     "push refused: the quota_bytes of tenant t is 1000 bytes; its repositories would grow from "
     "500 bytes to 1001 bytes"),
    # Another push in progress counts as if it had landed, and the message says so.
    (PushLimits(repo_quota_bytes=1000), Measured(300, repo_bytes=500, repo_pending_bytes=200), None),
    (PushLimits(repo_quota_bytes=1000), Measured(300, repo_bytes=500, repo_pending_bytes=201),
     "push refused: the quota_bytes of repository t/r is 1000 bytes; it would grow from 500 bytes "
     "to 1001 bytes, counting 201 bytes of other pushes in progress"),
    (PushLimits(tenant_quota_bytes=1000), Measured(300, tenant_bytes=500, tenant_pending_bytes=201),
     "push refused: the quota_bytes of tenant t is 1000 bytes; its repositories would grow from "
     "500 bytes to 1001 bytes, counting 201 bytes of other pushes in progress"),
    # The blob limit is named first when several are exceeded.
    (PushLimits(1, 1, 1, 1), Measured(10, (BLOB, 10), 10, 10), "GITSERVER_MAX_BLOB_BYTES"),
])
def test_over_limit(lim: PushLimits, measured: Measured, expect: str | None) -> None:
    message = limits.over_limit(lim, measured, repo="t/r", tenant="t")
    if expect is None or message is None:
        assert message == expect
    else:
        assert expect in message


@pytest.mark.parametrize("lim", [
    PushLimits(), PushLimits(100, 200), PushLimits(None, None, 5, None), PushLimits(1, 2, 3, 4)])
def test_environment_round_trip(lim: PushLimits) -> None:
    assert PushLimits.from_env(lim.to_env()) == lim


def test_git_settings_cut_the_pack_at_the_push_limit() -> None:
    assert limits.git_settings(PushLimits(max_push_bytes=5)) == {"receive.maxInputSize": "5"}
    assert limits.git_settings(PushLimits(max_blob_bytes=5)) == {}


@pytest.mark.parametrize("report, names", [
    ("", []),
    ("ng refs/heads/main non-fast-forward pushes are not allowed", []),
    ("remote: error: push refused: GITSERVER_MAX_BLOB_BYTES is 1 bytes; blob x is 2 bytes\n"
     "ng refs/heads/a pre-receive hook declined\nng refs/heads/b pre-receive hook declined", [limits.MAX_BLOB]),
    ("remote: fatal: pack exceeds maximum allowed size (2.00 KiB)", [limits.MAX_PUSH]),
    ("error: push refused: GITSERVER_MAX_PUSH_BYTES is 1 bytes; the pack...", [limits.MAX_PUSH]),
    ("error: push refused: the quota_bytes of repository t/r is ...", [limits.REPO_QUOTA]),
    ("error: push refused: the quota_bytes of tenant t is ...", [limits.TENANT_QUOTA]),
])
def test_limits_named_in_a_report(report: str, names: list[str]) -> None:
    assert limits.limits_named(report) == names


def _pre_receive(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], measured: Measured) -> tuple[int, str]:
    # The measurement on disk is tested below and in the functional tests; here only the verdict.
    monkeypatch.setattr(limits, "measure", lambda lim, quarantine, repo_dir: measured)
    err = io.BytesIO()
    rc = pre_receive([f"{Z} {A} refs/heads/a\n"], err, {"GITSERVER_PERMISSION": "write", **environ})
    return rc, err.getvalue().decode()


PROC_RECEIVE = {"GIT_CONFIG_PARAMETERS": "'receive.procReceiveRefs'='refs/'"}


def test_pre_receive_refuses_a_push_over_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**PushLimits(max_blob_bytes=10).to_env(), "GIT_QUARANTINE_PATH": "/q", "GITSERVER_REPO": "t/r",
           **PROC_RECEIVE}
    assert _pre_receive(monkeypatch, env, Measured(5, (BLOB, 11))) == (
        1, f"error: push refused: GITSERVER_MAX_BLOB_BYTES is 10 bytes; blob {BLOB} is 11 bytes\n")


@pytest.mark.parametrize("environ", [
    {**PushLimits(max_blob_bytes=10).to_env(), "GIT_QUARANTINE_PATH": "/q", **PROC_RECEIVE},
    {"GIT_QUARANTINE_PATH": "/q", **PROC_RECEIVE},  # no limit set
    {**PushLimits(max_blob_bytes=1).to_env(), **PROC_RECEIVE},  # no objects pushed
])
def test_pre_receive_lets_the_rest_to_proc_receive(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> None:
    assert _pre_receive(monkeypatch, environ, Measured(5, (BLOB, 10))) == (0, "")


def test_pre_receive_still_checks_the_rules_without_proc_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, err = _pre_receive(monkeypatch, {"GITSERVER_PERMISSION": "read"}, Measured(0))
    assert rc == 1 and "you do not have write permission" in err


def test_disk_usage_skips_quarantines(tmp_path: Path) -> None:
    (tmp_path / "objects" / "pack").mkdir(parents=True)
    (tmp_path / "objects" / "pack" / "p.pack").write_bytes(b"x" * 1000)
    (tmp_path / "HEAD").write_bytes(b"y" * 24)
    quarantine = tmp_path / "objects" / "tmp_objdir-incoming-abc123"
    quarantine.mkdir()
    (quarantine / "big").write_bytes(b"z" * 5000)
    (tmp_path / "link").symlink_to("/etc/passwd")
    assert limits.disk_usage(tmp_path) == 1024
    assert limits.disk_usage(quarantine) == 5000
    assert limits.disk_usage(tmp_path / "missing") == 0


def test_quarantines_of_other_pushes_in_progress_count_and_stale_ones_do_not(tmp_path: Path) -> None:
    """Two pushes into one repository (or tenant) at once each see the other's quarantine,
    so they cannot both pass a quota only one of them fits; a quarantine left by a push that
    died (untouched for PENDING_SECONDS) no longer counts."""
    objects = tmp_path / "t" / "r.git" / "objects"
    (objects / "pack").mkdir(parents=True)
    (objects / "pack" / "p.pack").write_bytes(b"x" * 1000)
    own = objects / "tmp_objdir-incoming-own111"
    other = objects / "tmp_objdir-incoming-oth222"
    stale = objects / "tmp_objdir-incoming-old333"
    for quarantine, size in ((own, 300), (other, 200), (stale, 4000)):
        (quarantine / "pack").mkdir(parents=True)
        (quarantine / "pack" / "tmp_pack_x").write_bytes(b"q" * size)
    elsewhere = tmp_path / "t" / "s.git" / "objects" / "tmp_objdir-incoming-sib444"
    (elsewhere / "pack").mkdir(parents=True)
    (elsewhere / "pack" / "tmp_pack_y").write_bytes(b"q" * 50)
    old = time.time() - limits.PENDING_SECONDS - 60
    for path in (stale, stale / "pack"):
        os.utime(path, (old, old))

    assert limits.disk_usage(tmp_path / "t" / "r.git") == 1000  # what has landed, as before
    lim = PushLimits(repo_quota_bytes=1400, tenant_quota_bytes=1500)
    measured = limits.measure(lim, own, tmp_path / "t" / "r.git")
    assert measured.repo_pending_bytes == 200
    assert measured.tenant_pending_bytes == 250  # the tenant: its other repository too
    assert measured == Measured(300, None, 1000, 1000, 200, 250)
    message = limits.over_limit(lim, measured, repo="t/r", tenant="t")
    assert message is not None and "counting 200 bytes of other pushes in progress" in message


@pytest.mark.parametrize("n, text", [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1.0 KiB"),
                                     (100 * MiB, "100.0 MiB"), (3 * 1024 * MiB, "3.0 GiB")])
def test_human(n: int, text: str) -> None:
    assert limits.human(n) == text


@pytest.mark.parametrize("name, ok", [
    ("tmp_objdir-incoming-Ab12_x", True),
    ("incoming-abc123", True),  # git before 2.31
    ("tmp_objdir-incoming-missing", False),  # not there
    ("pack", False), ("../../elsewhere/objects/tmp_objdir-incoming-Ab12_x", False),
    ("tmp_objdir-incoming-Ab12_x/..", False), ("", False), (None, False), (["incoming-x"], False),
])
def test_the_daemon_measures_only_quarantines_of_its_repository(tmp_path: Path, name: object, ok: bool) -> None:
    (tmp_path / "objects" / "tmp_objdir-incoming-Ab12_x").mkdir(parents=True)
    (tmp_path / "objects" / "incoming-abc123").mkdir()
    (tmp_path / "objects" / "pack").mkdir()
    check = limits.QuarantineCheck(PushLimits(max_blob_bytes=1), tmp_path, "t/r")
    if ok:
        assert check.quarantine(name) == tmp_path / "objects" / str(name)
    else:
        with pytest.raises(ValueError):
            check.quarantine(name)
