"""The fsck policy: cosmetic findings relaxed, security findings never."""

from __future__ import annotations

import pytest

from gitserver.git import fsck
from gitserver.git.store import COMPAT_CONFIG, PROTECTED_CONFIG, RECEIVE_PACK, git_argv


@pytest.mark.parametrize(("key", "severity"), [
    ("receive.fsck.badTimezone", "warn"),
    ("receive.fsck.missingSpaceBeforeDate", "warn"),
    ("receive.fsck.badDate", "warn"),
    ("receive.fsck.zeroPaddedFilemode", "ignore"),
    ("fsck.badTimezone", "warn"),
])
def test_cosmetic_findings_are_relaxed_on_every_receive_pack(key: str, severity: str,
                                                              tmp_path: object) -> None:
    assert COMPAT_CONFIG[key] == severity
    assert key not in PROTECTED_CONFIG  # gitserver check does not require it of older repos
    assert f"{key}={severity}" in git_argv(RECEIVE_PACK, tmp_path, tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("finding", [
    "hasDotgit", "hasDot", "hasDotdot", "gitmodulesName", "gitmodulesUrl", "gitmodulesPath",
    "gitmodulesSymlink", "gitmodulesParse", "gitmodulesBlob", "gitmodulesUpdate",
    "fullPathname", "emptyName", "duplicateEntries", "treeNotSorted", "badTree", "badObjectSha1",
])
def test_security_and_structural_findings_stay_errors(finding: str) -> None:
    assert finding not in fsck.BENIGN_FINDINGS
    for section in ("receive.fsck", "fetch.fsck", "fsck"):
        assert f"{section}.{finding}" not in {**fsck.settings(section), **COMPAT_CONFIG}


def test_fetch_settings_mirror_receive() -> None:
    assert {k.removeprefix("fetch.fsck."): v for k, v in fsck.FETCH_SETTINGS.items()} == \
        {k.removeprefix("receive.fsck."): v for k, v in fsck.RECEIVE_SETTINGS.items()}
