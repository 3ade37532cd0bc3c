"""The backup file: a POSIX tar stream whose member names and contents are checked here.

Layout, in the order the members are written::

    gitserver-backup.json                 manifest (format version, database dialect, counts)
    database/gitserver.sqlite3            SQLite: a copy made with the sqlite3 backup API
    database/postgresql.dump              PostgreSQL: pg_dump --format=custom
    ssh/<host key files>                  the SSH host keys, so clients see the same server
    repos/<tenant>/<repo>.git/refs        HEAD and every ref, as recorded in the database
    repos/<tenant>/<repo>.git/objects.pack  every object those refs reach (git pack format)
    SHA256SUMS                            the SHA-256 of every member above, written last

A restore accepts only these names (anything else is refused, so a crafted file cannot write
outside its target) and only a stream that ends with a SHA256SUMS matching every member: a
truncated or altered file is refused before anything is restored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping

from gitserver.git import refs as git_refs
from gitserver.policy.names import name_problem

FORMAT = "gitserver-backup"
FORMAT_VERSION = 1
MANIFEST = "gitserver-backup.json"
SUMS = "SHA256SUMS"
DATABASE_SQLITE = "database/gitserver.sqlite3"
DATABASE_POSTGRESQL = "database/postgresql.dump"
DATABASE_MEMBERS = {"sqlite": DATABASE_SQLITE, "postgresql": DATABASE_POSTGRESQL}
HOST_KEYS = "ssh"
# The server's signing keys and their history (gitserver.provenance.keys): the restored server
# must sign with the same keys and publish the same windows, or its old signatures stop verifying.
SIGNING = "signing"
REPOS = "repos"
REFS_FILE = "refs"
PACK_FILE = "objects.pack"
# Git LFS objects of the local store (docs/lfs.md): lfs/<oid>, each once whoever holds it.
LFS = "lfs"
_LFS_OID_RE = re.compile(r"^[0-9a-f]{64}$")
HEAD_PREFIX = "ref: "
DEFAULT_HEAD = "refs/heads/main"

# Host key files are named by ssh-keygen/asyncssh convention; nothing else is restored there.
_HOST_KEY_RE = re.compile(r"^ssh_host_[a-z0-9_]+_key(\.pub)?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FormatError(ValueError):
    """The backup file is not one this version can restore; the message says why."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What the first member of a backup says about the rest."""

    dialect: str  # "sqlite" | "postgresql"
    created_at: str  # ISO 8601, UTC
    gitserver_version: str
    schema_revision: str  # alembic revision of the database in the backup
    repositories: int
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    # Each repository's reference-log cut: "tenant/repo" → {"cut": <log commit>, "entries": n}
    # (docs/backup.md); absent for a repository without a log, and in backups older than it.
    logs: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{MANIFEST} is not valid JSON") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise FormatError("this is not a gitserver backup (no gitserver-backup manifest)")
        if raw.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"backup format version {raw.get('format_version')!r} is not supported "
                              f"(this gitserver reads version {FORMAT_VERSION})")
        if raw.get("dialect") not in DATABASE_MEMBERS:
            raise FormatError(f"unknown database dialect {raw.get('dialect')!r} in {MANIFEST}")
        texts = {}
        for name in ("created_at", "gitserver_version", "schema_revision"):
            if not isinstance(raw.get(name), str):
                raise FormatError(f"{MANIFEST}: {name} must be a string")
            texts[name] = raw[name]
        repositories = raw.get("repositories")
        if not isinstance(repositories, int) or isinstance(repositories, bool) or repositories < 0:
            raise FormatError(f"{MANIFEST}: repositories must be a count")
        return cls(dialect=raw["dialect"], created_at=texts["created_at"],
                   gitserver_version=texts["gitserver_version"], schema_revision=texts["schema_revision"],
                   repositories=repositories, logs=_log_cuts(raw.get("logs", {})))

    def log_cut(self, tenant: str, repo: str) -> str | None:
        """The log commit the backup ends ``tenant/repo``'s reference log at (None: no log)."""
        found = self.logs.get(f"{tenant}/{repo}")
        return str(found["cut"]) if found else None


def _log_cuts(raw: object) -> dict[str, dict[str, object]]:
    if not isinstance(raw, dict):
        raise FormatError(f"{MANIFEST}: logs must be an object")
    for name, cut in raw.items():
        commit = cut.get("cut") if isinstance(cut, dict) else None
        if not (isinstance(commit, str) and git_refs.is_oid(commit) and isinstance(cut.get("entries"), int)):
            raise FormatError(f"{MANIFEST}: logs.{str(name)[:100]} must be {{\"cut\": <object id>, \"entries\": n}}")
    return raw


@dataclasses.dataclass(frozen=True)
class RepoRefs:
    """One repository's refs as the backup holds them: HEAD's target and name → object id."""

    head: str
    refs: Mapping[str, str]

    def render(self) -> bytes:
        lines = [f"{HEAD_PREFIX}{self.head}"]
        lines += [f"{oid} {ref}" for ref, oid in sorted(self.refs.items())]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, what: str) -> RepoRefs:
        try:
            lines = data.decode("ascii").splitlines()
        except UnicodeDecodeError as exc:
            raise FormatError(f"{what}: not ASCII") from exc
        if not lines or not lines[0].startswith(HEAD_PREFIX):
            raise FormatError(f"{what}: first line must be '{HEAD_PREFIX}<ref>'")
        head = lines[0][len(HEAD_PREFIX):]
        if git_refs.ref_format_problem(head):
            raise FormatError(f"{what}: HEAD names a malformed ref")
        refs: dict[str, str] = {}
        for number, line in enumerate(lines[1:], start=2):
            oid, _, ref = line.partition(" ")
            problem = git_refs.ref_format_problem(ref)
            if not git_refs.is_oid(oid) or problem:
                raise FormatError(f"{what} line {number}: expected '<object id> <ref>'"
                                  + (f" ({problem})" if problem and git_refs.is_oid(oid) else ""))
            if ref in refs:
                raise FormatError(f"{what} line {number}: {ref} appears twice")
            refs[ref] = oid
        return cls(head=head, refs=refs)


def repo_member(tenant: str, repo: str, name: str) -> str:
    return f"{REPOS}/{tenant}/{repo}.git/{name}"


def render_sums(sums: Mapping[str, str]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, digest in sums.items()).encode()


def parse_sums(data: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{SUMS} is not UTF-8") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or not _SHA256_RE.fullmatch(digest) or not name:
            raise FormatError(f"{SUMS} line {number}: expected '<sha256>  <member>'")
        sums[name] = digest
    return sums


@dataclasses.dataclass(frozen=True)
class Member:
    """A checked member name: what it is and, for repository members, whose."""

    kind: str  # manifest | sums | database | host_key | signing_key | refs | pack | lfs
    tenant: str = ""
    repo: str = ""


_SIGNING_FILE_RE = re.compile(r"^(?:keys\.json|ed25519-[0-9]{14}-[0-9a-f]{8})$")


def classify(name: str) -> Member:
    """What the member ``name`` is; FormatError for any name a backup never contains.

    An allow-list: names come from the file, which may have been crafted, and they become
    paths under the restore's staging directory.
    """
    if name == MANIFEST:
        return Member("manifest")
    if name == SUMS:
        return Member("sums")
    if name in DATABASE_MEMBERS.values():
        return Member("database")
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == HOST_KEYS and _HOST_KEY_RE.fullmatch(parts[1]):
        return Member("host_key")
    if len(parts) == 2 and parts[0] == LFS and _LFS_OID_RE.fullmatch(parts[1]):
        return Member("lfs")
    if len(parts) == 2 and parts[0] == SIGNING and _SIGNING_FILE_RE.fullmatch(parts[1]):
        return Member("signing_key")
    if (len(parts) == 4 and parts[0] == REPOS and parts[2].endswith(".git")
            and parts[3] in (REFS_FILE, PACK_FILE)):
        tenant, repo = parts[1], parts[2][:-len(".git")]
        if name_problem(tenant) is None and name_problem(repo) is None:
            return Member("refs" if parts[3] == REFS_FILE else "pack", tenant, repo)
    raise FormatError(f"unexpected member {name[:200]!r} in the backup file")
