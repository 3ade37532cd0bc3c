"""Table tests of the SSH exec command parser: the allow-list at the edge."""

from __future__ import annotations

import pytest

from gitserver.policy.errors import InvalidInput
from gitserver.ssh.commands import GitCommand, parse_command

GOOD = [
    ("git-upload-pack 'acme/repo.git'", GitCommand("upload-pack", "acme", "repo")),
    ("git-upload-pack 'acme/repo'", GitCommand("upload-pack", "acme", "repo")),
    ("git-upload-pack '/acme/repo.git'", GitCommand("upload-pack", "acme", "repo")),
    ("git-receive-pack acme/repo", GitCommand("receive-pack", "acme", "repo")),
    ("git-receive-pack /acme/repo", GitCommand("receive-pack", "acme", "repo")),
    ("git-receive-pack acme/repo/", GitCommand("receive-pack", "acme", "repo")),
    ("git-upload-archive 'acme/repo.git'", GitCommand("upload-archive", "acme", "repo")),
    ("git upload-pack 'acme/repo.git'", GitCommand("upload-pack", "acme", "repo")),
    ("git receive-pack 'acme/r-1_2.x'", GitCommand("receive-pack", "acme", "r-1_2.x")),
    ("git-upload-pack 'A9/b'", GitCommand("upload-pack", "A9", "b")),
    # An "absolute" path only ever names <tenant>/<repo> inside the store, never a host path.
    ("git-upload-pack '/etc/passwd'", GitCommand("upload-pack", "etc", "passwd")),
]

BAD = [
    "",
    "ls",
    "sh -c 'id'",
    "git-upload-pack",
    "git-upload-pack ",
    "git-upload-pack ''",
    "git-upload-pack 'repo'",
    "git-upload-pack '../x'",
    "git-upload-pack 'acme/../x'",
    "git-upload-pack 'acme/..'",
    "git-upload-pack '../../etc/passwd'",
    "git-upload-pack '/var/lib/passwd'",
    "git-upload-pack '/srv/acme/repo'",
    "git-upload-pack '//acme/repo'",
    "git-upload-pack 'acme//repo'",
    "git-upload-pack 'acme/repo'; id",
    "git-upload-pack 'acme/repo;id'",
    "git-upload-pack 'acme/`id`'",
    "git-upload-pack `id`/repo",
    "git-upload-pack 'acme/$(id)'",
    "git-upload-pack acme/repo\nid",
    "git-upload-pack 'acme/repo'\n",
    "git-upload-pack 'acme/re\x00po'",
    "git-upload-pack 'acme/repo' extra",
    "git-upload-pack 'acme/repo' 'other/repo'",
    "git-upload-pack --upload-pack=id 'acme/repo'",
    "git-upload-pack '--upload-pack=id'",
    "git-upload-pack '-acme/repo'",
    "git-upload-pack 'acme/-repo'",
    "git-upload-pack \"acme/repo\"",
    "git-upload-pack 'acme/repo",
    "git-upload-pack acme/repo'",
    "git-upload-pack 'acme'/repo",
    "git-upload-pack 'acme/r\u0435po'",  # Cyrillic e
    "git-upload-pack '\uff41cme/repo'",  # fullwidth a
    "git-upload-pack\t'acme/repo'",
    "git-upload-pack  'acme/repo'",
    " git-upload-pack 'acme/repo'",
    "GIT-UPLOAD-PACK 'acme/repo'",
    "git-upload-pack '~/acme/repo'",
    "git-upload-pack '~acme/repo'",
    "git-upload-pack 'acme/.repo'",
    "git-upload-pack 'acme/repo.git.git'",
    "git-upload-pack 'acme/repo.lock'",
    "git-upload-pack 'acme/.git'",
    "git-upload-pack 'acme/repo/x'",
    "git-upload-pack 'acme/" + "a" * 101 + "'",
    "git-upload-pack 'acme/" + "a" * 10_000 + "'",
    "x" * 10_000,
    "git upload-pack --help",
    "git-upload-pack\x00 'acme/repo'",
    "git-shell 'acme/repo'",
    "git-upload-packx 'acme/repo'",
    "scp -t acme/repo",
    "internal-sftp",
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_accepts_git_commands(text: str, expected: GitCommand) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", BAD)
def test_refuses_everything_else_with_one_safe_line(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_command(text)
    message = info.value.message
    assert "\n" not in message and "\x00" not in message
    assert len(message) < 200
    assert message.isascii()


def test_full_name() -> None:
    assert parse_command("git-upload-pack 'acme/repo.git'").full_name == "acme/repo"
