"""Parsing of the exec command an SSH client sends (``git-upload-pack 'acme/repo.git'``).

An allow-list, like gitolite's: three git verbs, one repository path, nothing else. The
result never reaches a shell; it names a service and two validated names, from which the
server builds the repository path itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gitserver.git.store import RECEIVE_PACK, UPLOAD_ARCHIVE, UPLOAD_PACK
from gitserver.policy.errors import InvalidInput
from gitserver.policy.names import GIT_SUFFIX, RepoNamed, name_problem

# The exec request strings git sends: "git-upload-pack 'path'"; "git upload-pack" is the
# form some clients (and people typing by hand) use.
VERBS = {
    "git-upload-pack": UPLOAD_PACK,
    "git-receive-pack": RECEIVE_PACK,
    "git-upload-archive": UPLOAD_ARCHIVE,
    "git upload-pack": UPLOAD_PACK,
    "git receive-pack": RECEIVE_PACK,
    "git upload-archive": UPLOAD_ARCHIVE,
}
# Longer than any valid "tenant/repo.git" path can be; longer input is refused before any
# regular expression looks at it.
MAX_COMMAND_LENGTH = 300
# verb, one space, then the path: single-quoted (as git sends it) or bare. The path itself may
# contain no quote, space or control character; names are checked separately.
_COMMAND_RE = re.compile(r"(git[- ](?:upload-pack|receive-pack|upload-archive)) "
                         r"(?:'([^'\s\x00-\x1f]*)'|([^'\s\x00-\x1f]*))")
# What marks an exec command as one for git rather than a self-service command
# (gitserver.ssh.selfservice): its first word is this, or starts with this and a dash.
GIT_WORD = "git"
USAGE = "only git-upload-pack, git-receive-pack and git-upload-archive '<tenant>/<repo>' are accepted"


@dataclass(frozen=True)
class GitCommand(RepoNamed):
    """A validated request: which git service, on which repository."""

    service: str
    tenant: str
    repo: str


def is_git_request(text: str) -> bool:
    """Whether ``text`` asks for git (first word ``git`` or ``git-…``): those get git's
    refusals (exit 128); every other command is a self-service command (exit 1 on an error)."""
    words = text.split(None, 1)
    return bool(words) and (words[0] == GIT_WORD or words[0].startswith(GIT_WORD + "-"))


def parse_command(text: str) -> GitCommand:
    """Parse an SSH exec command; raise :class:`InvalidInput` with a one-line safe message."""
    if not isinstance(text, str) or not text:
        raise InvalidInput(USAGE)
    if len(text) > MAX_COMMAND_LENGTH:
        raise InvalidInput("command too long; " + USAGE)
    match = _COMMAND_RE.fullmatch(text)
    if not match:
        raise InvalidInput(USAGE)
    verb, quoted, bare = match.groups()
    tenant, repo = split_repo_path(quoted if quoted is not None else bare)
    return GitCommand(VERBS[verb], tenant, repo)


def split_repo_path(path: str) -> tuple[str, str]:
    """``tenant/repo``, ``/tenant/repo``, ``tenant/repo.git``, ``tenant/repo/`` → two names."""
    trimmed = path
    if trimmed.startswith("/"):
        trimmed = trimmed[1:]
    if trimmed.endswith("/"):
        trimmed = trimmed[:-1]
    parts = trimmed.split("/")
    if len(parts) != 2:
        raise InvalidInput("the repository path must be '<tenant>/<repo>'")
    tenant, repo = parts
    if repo.endswith(GIT_SUFFIX):
        repo = repo[: -len(GIT_SUFFIX)]
    for what, name in (("tenant", tenant), ("repository", repo)):
        problem = name_problem(name)
        if problem:
            # The name is echoed only when it is short and printable ASCII (the pattern
            # already refused everything else), so the message stays one safe line.
            raise InvalidInput(f"invalid {what} name in path: {problem}")
    return tenant, repo


# --- Git LFS over SSH (docs/lfs.md) -------------------------------------------------------------

LFS_AUTHENTICATE = "git-lfs-authenticate"
LFS_TRANSFER = "git-lfs-transfer"
LFS_VERBS = (LFS_AUTHENTICATE, LFS_TRANSFER)
LFS_OPERATIONS = ("upload", "download")
LFS_USAGE = "usage: git-lfs-authenticate|git-lfs-transfer '<tenant>/<repo>' upload|download"
_LFS_RE = re.compile(r"(git-lfs-authenticate|git-lfs-transfer) "
                     r"(?:'([^'\s\x00-\x1f]*)'|([^'\s\x00-\x1f]*)) (\S+)")


@dataclass(frozen=True)
class LfsCommand(RepoNamed):
    """``git-lfs-authenticate`` or ``git-lfs-transfer``, on a repository, for an operation."""

    verb: str
    tenant: str
    repo: str
    operation: str


def is_lfs_request(text: str) -> bool:
    return text.split(" ", 1)[0] in LFS_VERBS


def parse_lfs_command(text: str) -> LfsCommand:
    """Parse ``git-lfs-authenticate '/acme/widgets.git' download`` (the path forms of
    :func:`split_repo_path`); InvalidInput with a one-line message otherwise."""
    if len(text) > MAX_COMMAND_LENGTH:
        raise InvalidInput("command too long; " + LFS_USAGE)
    match = _LFS_RE.fullmatch(text)
    if not match:
        raise InvalidInput(LFS_USAGE)
    verb, quoted, bare, operation = match.groups()
    if operation not in LFS_OPERATIONS:
        raise InvalidInput(f"the operation must be upload or download; {LFS_USAGE}")
    tenant, repo = split_repo_path(quoted if quoted is not None else bare)
    return LfsCommand(verb, tenant, repo, operation)
