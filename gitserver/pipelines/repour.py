"""The work behind the Repour-compatible endpoints: /clone, /adjust, /internal-scm, cancel.

Repour needed Gerrit or GitLab as the trusted repository provider; here gitserver is the
provider, so the rules Repour relied on are the server's own:

* Sources come from untrusted origins. Every origin URL is parsed and checked first
  (:func:`check_origin`: https, git and ssh; http, ``file://`` and loopback/private hosts only
  when ``allow_private_networks`` is on; never a path inside the data directory). git runs
  from argument lists, in a temporary repository, with a protocol allow-list on its command
  line, no hooks, no prompts, object checking on, and a timeout.
* What reaches an internal repository arrives through the real ``git push`` into the
  repository's path with the server's hooks active, so the protection rules (fast-forward only,
  tags never move, reserved names) refuse exactly what they refuse to any pusher, and the
  proc-receive hook records the push (protocol ``repour``) and queues its archive pipeline.
* Tags made by /adjust are the server's own, like archive tags: written with pygit2 straight
  into the repository (never through a user-facing path), deduplicated by tree through the
  Archive table, so the same tree always gets the tag it got the first time.

Each operation runs the same way inline (synchronous request) or as a ``repour`` job
(callback mode, :func:`run_repour_job`); :func:`execute` turns its outcome into Repour's
status and body.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shlex
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pygit2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gitserver import metrics, netguard, sandbox
from gitserver.config import Config
from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.db.session import transaction
from gitserver.errors import GitserverError
from gitserver.git import fsck, limits, refs
from gitserver.git.store import RECEIVE_PACK, git_argv, git_env
from gitserver.hookenv import ENV_CONFIG, ENV_HOOK_FD, HookEnv
from gitserver.names import validate_name
from gitserver.pipelines import adjust as adjust_mod
from gitserver.pipelines import heartbeat, jobs, ledger
from gitserver.pipelines.adjust import ProcessingError, StopCheck, run_command
from gitserver.pipelines.archive import find_archive
from gitserver.pipelines.ledger import PushContext
from gitserver.sandbox import Job

log = logging.getLogger(__name__)

JOB_KIND = "repour"
OPERATIONS = ("clone", "adjust")
PUSH_PROTOCOL = "repour"
# Repour's callback ids: 30 random bytes in base32, 48 characters, no padding.
CALLBACK_ID_BYTES = 30
# Identity of the commits and tags the server makes while adjusting.
COMMITTER_NAME = "gitserver"
COMMITTER_EMAIL = "gitserver@localhost"
PULL_REQUEST_TAG_PREFIX = "Pull_Request-"
# Repour's tag for a commit id synced from upstream (/clone, /adjust with sync).
SYNC_TAG_PREFIX = "repour-sync-"
# Pull/merge request refs as GitHub and GitLab publish them; fetched, never pushed as a branch.
PULL_REQUEST_RE = re.compile(r"^(?P<kind>pull|merge-requests)/(?P<number>[0-9]{1,12})$")
SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")
# Namespaces inside the temporary repository, one per remote, so that origin and internal refs
# (and tags, which git would otherwise merge) never mix.
ORIGIN, INTERNAL = "origin", "internal"
SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
# Schemes Repour's /git-external-to-internal translates.
EXTERNAL_SCHEMES = ("https", "http", "git", "git+ssh", "ssh")
_DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
_SCP_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):"
                     r"(?P<path>[^:]+)$")
MAX_URL_LENGTH = 2000
# How often an inline (synchronous) run asks the database whether it was cancelled.
INLINE_CANCEL_POLL = 1.0
# The payload "mode" of the job a synchronous request's API process holds (see InlineLease).
INLINE_MODE = "inline"
# Exit code of the error bodies of interrupted synchronous runs: EX_TEMPFAIL, try again.
LEASE_LOST_EXIT_CODE = 75
INTERRUPTED_DESC = ("the API process running this synchronous request stopped before it finished "
                    "(its lease expired); nothing is waiting for the result: send the request again "
                    "(clone and adjust are idempotent)")


def new_callback_id() -> str:
    return base64.b32encode(secrets.token_bytes(CALLBACK_ID_BYTES)).decode("ascii")


# --- git URLs (pure) ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GitUrl:
    """A git remote as git understands it: URL forms, scp-like ``user@host:path``, local paths."""

    text: str
    scheme: str  # https http git ssh git+ssh ssh+git file; "ssh" for scp-like
    host: str = ""
    port: int | None = None
    path: str = ""
    scp_like: bool = False

    # The addresses check_origin() validated for the host name (http and https only; see
    # :meth:`git_settings`). Empty: git resolves the host itself (IP literals need nothing).
    addresses: tuple[str, ...] = ()

    @property
    def transport(self) -> str:
        """The git protocol name (``protocol.<name>.allow``)."""
        return "ssh" if self.scheme in ("git+ssh", "ssh+git") else self.scheme

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS.get(self.transport, 443)

    def git_settings(self) -> dict[str, str]:
        """``git -c`` settings that make git connect exactly where :func:`check_origin` looked.

        The origin check resolves the host and validates every address, but git (libcurl)
        would resolve the name again when it connects: a DNS answer that changed in between
        (rebinding: public address first, then 127.0.0.1 or 169.254.169.254) would reach an
        address that was never checked. ``http.curloptResolve`` (git >= 2.37) hands libcurl
        the checked addresses for ``host:port``, so it does not ask DNS at all. Redirects are
        not followed: one to another host would be resolved by libcurl, unchecked.

        git:// and ssh origins have no such option (git connects itself, ssh runs its own
        resolver), so between the check and the connection their host name is resolved
        again: a rebinding DNS server can still point those at an unchecked address. Refusing
        them is the only complete fix; operators who need that allow https origins only.
        """
        if self.transport not in ("http", "https") or not self.addresses:
            return {}
        addresses = ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        return {"http.curloptResolve": f"{self.host}:{self.effective_port}:{addresses}",
                "http.followRedirects": "false"}


def parse_git_url(text: object) -> GitUrl:
    """Parse a git remote; ValueError with the reason for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected a git URL")
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError("the URL contains whitespace or control characters")
    if text.startswith("-"):
        # git would read it as an option.
        raise ValueError("a URL cannot start with '-'")
    if "://" in text:
        return _parse_url_form(text)
    if text.startswith("/"):
        return GitUrl(text=text, scheme="file", path=text)
    match = _SCP_RE.match(text)
    if match is None:
        raise ValueError("not a git URL (expected scheme://host/path, user@host:path or /path)")
    host = match["host"].strip("[]")
    path = match["path"]
    if not path.strip("/"):
        raise ValueError("the URL names no repository path")
    return GitUrl(text=text, scheme="ssh", host=host.lower(), path=path, scp_like=True)


def _parse_url_form(text: str) -> GitUrl:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r} is not a git transport ({', '.join(SCHEMES)})")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// URL cannot name a host")
        if not parts.path.strip("/"):
            raise ValueError("the URL names no repository path")
        return GitUrl(text=text, scheme="file", path=parts.path)
    # git's own parser reads "[addr]" before the '@' as the host (git://[::1]@example.com goes
    # to ::1) where urlsplit sees example.com; a user part with brackets or a second '@' is
    # read differently by git, curl and Python, so the checked host might not be the one git
    # connects to. git URL-decodes the whole URL first, so the decoded form is what counts.
    userinfo = unquote(parts.netloc.rpartition("@")[0])
    if any(c in userinfo for c in "[]@"):
        raise ValueError("the user part of the URL cannot contain '[', ']' or '@'")
    host = parts.hostname or ""
    if not host:
        raise ValueError("the URL has no host")
    if not parts.path.strip("/"):
        raise ValueError("the URL names no repository path")
    return GitUrl(text=text, scheme=scheme, host=host, port=port, path=parts.path)


def repo_path_parts(url: GitUrl) -> tuple[str, str]:
    """The last two path components (organisation, repository) with ``.git`` removed."""
    parts = [p for p in url.path.split("/") if p]
    if len(parts) < 2:
        raise ValueError("the URL does not name <tenant>/<repository>")
    return parts[-2], parts[-1].removesuffix(".git")


def external_to_internal(external_url: object, ssh_base: str, default_tenant: str = "") -> str:
    """Repour's translation of an upstream URL to the internal repository's URL.

    Like Repour (maitai's GitUrlParser): the last path component is the repository, the one
    before it the organisation (``gerrit`` is not one), and the internal URL is
    ``<base>/<organisation>/<repository>.git``. In gitserver the organisation is the tenant;
    an upstream URL without one maps into ``default_tenant`` when configured.
    """
    url = parse_git_url(external_url)
    if url.scp_like and "@" not in url.text.split(":", 1)[0]:
        # Repour reads "host:path" without "user@" as a URL whose scheme is "host".
        raise ValueError(f"scheme {url.text.split(':', 1)[0]!r} is not accepted; use one of "
                         f"{', '.join(EXTERNAL_SCHEMES)} or user@host:path")
    if url.scheme not in EXTERNAL_SCHEMES:
        raise ValueError(f"scheme {url.scheme!r} is not accepted; use one of {', '.join(EXTERNAL_SCHEMES)}")
    parts = [p for p in url.path.split("/") if p]
    if not parts or not parts[-1].removesuffix(".git"):
        raise ValueError("could not translate the URL: no repository specified")
    repository = parts[-1].removesuffix(".git")
    organisation = parts[-2] if len(parts) > 1 and parts[-2] != "gerrit" else default_tenant
    # scp-like "git@host:org/repo.git" puts the organisation after the colon.
    organisation = organisation.rpartition(":")[2]
    for value, what in ((organisation, "organisation"), (repository, "repository")):
        if value or what == "repository":
            try:
                validate_name(value, what)
            except GitserverError as exc:
                raise ValueError(exc.message) from exc
    if not organisation:
        # Like Repour: the repository alone, at the root of the internal server. (/internal-scm
        # puts such a project into repour_default_tenant; configure it to get that tenant here.)
        return f"{ssh_base.rstrip('/')}/{repository}.git"
    return f"{ssh_base.rstrip('/')}/{organisation}/{repository}.git"


def internal_repo_name(url_text: object) -> tuple[str, str]:
    """(tenant, repository) named by an internal URL: the SSH URL (``…/t/r.git``), the smart
    HTTP URL (``…/git/t/r.git``) or scp-like ``git@host:t/r.git``."""
    return repo_path_parts(parse_git_url(url_text))


@dataclasses.dataclass(frozen=True)
class RepoUrls:
    readwrite: str
    readonly: str


def repo_urls(config: Config, tenant: str, repo: str) -> RepoUrls:
    """The URLs handed out: SSH for writing, the read-only smart HTTP endpoint for builders."""
    return RepoUrls(readwrite=f"{config.ssh_base_url}/{tenant}/{repo}.git",
                    readonly=f"{config.http_base_url}/git/{tenant}/{repo}.git")


def is_pull_request(ref: str) -> bool:
    return PULL_REQUEST_RE.match(ref) is not None


# --- origin policy ---------------------------------------------------------------------------

def check_origin(url_text: str, config: Config,
                 resolver: netguard.Resolver = socket.getaddrinfo) -> GitUrl:
    """The origin as git will be given it, or a ProcessingError (exit code 10) saying why it
    is refused. Host addresses are checked with :mod:`gitserver.netguard`'s rules; for an
    http(s) host name the checked addresses come back in ``addresses``, and git is pinned to
    them (:meth:`GitUrl.git_settings`)."""
    try:
        url = parse_git_url(url_text)
    except ValueError as exc:
        raise ProcessingError(f"origin URL refused: {exc}", error_type="OriginRefused") from exc
    allow_private = config.allow_private_networks
    if url.transport in ("http", "file") and not allow_private:
        raise ProcessingError(f"origin URL refused: {url.transport} origins are only allowed when "
                              "private networks are allowed (use https, git or ssh)",
                              error_type="OriginRefused")
    if url.transport == "file":
        _check_local_origin(url, config)
        return url
    host = f"[{url.host}]" if ":" in url.host else url.host
    try:
        # netguard speaks http(s); the host and port rules are the same for every transport.
        target, addresses = netguard.validate(f"https://{host}:{url.effective_port}/",
                                              allow_private=allow_private, resolver=resolver)
    except netguard.UnsafeURL as exc:
        raise ProcessingError(f"origin URL refused: {exc.message}", error_type="OriginRefused") from exc
    if target.address is None and url.transport in ("http", "https"):
        # A host name: pin git to what was checked. (git:// and ssh cannot be pinned; see
        # GitUrl.git_settings for that remaining gap.)
        return dataclasses.replace(url, addresses=tuple(str(a) for a in addresses))
    return url


def _check_local_origin(url: GitUrl, config: Config) -> None:
    # A local path could name another tenant's repository (or the database): never inside the
    # data directory, whatever the tenant.
    path = Path(url.path).resolve()
    data = config.data_dir.resolve()
    if path == data or str(path).startswith(str(data) + os.sep):
        raise ProcessingError("origin URL refused: local paths inside the server's data directory "
                              "cannot be origins", error_type="OriginRefused")


# --- git in a temporary repository -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    """The internal repository an operation writes to, and who asked."""

    repo_id: int
    tenant: str
    name: str
    path: Path
    # Disk quotas a push is held to (gitserver.git.limits); None = none set.
    repo_quota_bytes: int | None = None
    tenant_quota_bytes: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.tenant}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who asked, for the push audit record."""

    user_id: int | None = None
    user_name: str = ""
    client_address: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Actor:
        data = data or {}
        return cls(user_id=data.get("user_id"), user_name=str(data.get("user_name") or ""),
                   client_address=str(data.get("client_address") or ""))


@dataclasses.dataclass(frozen=True)
class FoundRef:
    """A ref of a remote, resolved in the temporary repository."""

    kind: str  # branch | tag | commit | pull
    name: str  # as the caller named it (short)
    local: str  # the ref (or commit) to push from
    commit: str

    def push_refspec(self) -> str:
        """Where it goes in the internal repository (never for pull requests). Forced on the
        client side on purpose: the server is the one that decides (fast-forward only, tags
        never move), and its refusal names the rule."""
        if self.kind == "branch":
            return f"+{self.local}:{refs.HEADS}{self.name}"
        if self.kind == "tag":
            return f"+{self.local}:{refs.TAGS}{self.name}"
        raise ValueError(f"{self.kind} refs are never pushed (commits get a sync tag: sync_ref)")


class GitWork:
    """One temporary repository and the git commands run in it."""

    def __init__(self, config: Config, root: Path, *, bare: bool, stop: StopCheck,
                 output: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.root = root
        self.dir = root / "work"
        self.scratch = root / "scratch"
        self.scratch.mkdir()
        self.stop = stop
        self.output = output
        self.bare = bare
        self.git("init", "-q", *(["--bare"] if bare else []), str(self.dir), cwd=root, remote=None)

    # The allow-list git gets for each command. Talking to the internal repository (a path of
    # ours) needs the file transport; talking to an origin gets only what the policy allows.
    def _settings(self, remote: str | None) -> dict[str, str]:
        allow_private = self.config.allow_private_networks
        settings = {
            "protocol.allow": "never",
            "protocol.https.allow": "always",
            "protocol.git.allow": "always",
            "protocol.ssh.allow": "always",
            "protocol.http.allow": "always" if allow_private else "never",
            "protocol.file.allow": "always" if (allow_private or remote == INTERNAL) else "never",
            "core.hooksPath": os.devnull,
            "transfer.fsckObjects": "true",
            # The same fsck policy as a push (gitserver.git.fsck): an origin's history with a
            # cosmetic oddity is archived, one with a malicious .gitmodules is not.
            **fsck.FETCH_SETTINGS,
            "fetch.recurseSubmodules": "false",
            "submodule.recurse": "false",
            "credential.helper": "",
            "core.askPass": "",
            "core.fsmonitor": "false",
            # Symbolic links of an untrusted tree are checked out as small text files, so an
            # alignment tool rewriting "pom.xml" can never write through it to a server file.
            "core.symlinks": "false",
            "gc.auto": "0",
            "advice.detachedHead": "false",
            "init.defaultBranch": "main",
            "user.name": COMMITTER_NAME,
            "user.email": COMMITTER_EMAIL,
        }
        return settings

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        known_hosts = self.scratch / "known_hosts"
        # Origins are chosen by callers: never authenticate to one as the server's OS account.
        # ssh finds that account's default keys through the password database (not $HOME), so
        # they are switched off explicitly, with any agent; HOME is the scratch directory so
        # libcurl finds no ~/.netrc of the account either.
        ssh = ["ssh", "-F", os.devnull, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=30",
               "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=none", "-o", "IdentityAgent=none"]
        return git_env(HOME=str(self.scratch), GIT_SSH_COMMAND=shlex.join(ssh), GIT_ASKPASS="", SSH_ASKPASS="",
                       GIT_COMMITTER_NAME=COMMITTER_NAME, GIT_COMMITTER_EMAIL=COMMITTER_EMAIL,
                       GIT_AUTHOR_NAME=COMMITTER_NAME, GIT_AUTHOR_EMAIL=COMMITTER_EMAIL,
                       **(extra or {}))

    def git(self, *args: str, cwd: Path | None = None, remote: str | None = None,
            env: Mapping[str, str] | None = None, check: bool = True,
            desc: str = "", user_error: bool = False, pass_fds: Sequence[int] = (),
            settings: Mapping[str, str] | None = None) -> adjust_mod.CommandResult:
        argv = ["git"]
        for key, value in {**self._settings(remote), **(settings or {})}.items():
            argv += ["-c", f"{key}={value}"]
        argv += list(args)
        result = run_command(argv, cwd=cwd or self.dir, env=env or self.env(),
                             timeout=self.config.repour_git_timeout, stop=self.stop, output=self.output,
                             pass_fds=pass_fds)
        if check and result.exit_code != 0:
            raise ProcessingError(desc or f"git {args[0]} failed", cmd=argv,
                                  exit_code=adjust_mod.USER_ERROR_EXIT_CODE if user_error else result.exit_code,
                                  stderr=result.stderr, error_type="CommandError")
        return result

    # --- fetching -------------------------------------------------------------------------

    def fetch(self, source: GitUrl | str, namespace: str, *, remote: str, pull_request: str | None = None) -> None:
        """All branches and tags of ``source`` into ``refs/<namespace>/{heads,tags}/``, and the
        pull/merge request's head when one is named. A checked origin (:class:`GitUrl`) is
        fetched from the addresses its check validated."""
        url = source.text if isinstance(source, GitUrl) else source
        pin = source.git_settings() if isinstance(source, GitUrl) else {}
        refspecs = [f"+refs/heads/*:refs/{namespace}/heads/*", f"+refs/tags/*:refs/{namespace}/tags/*"]
        self.git("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--", url, *refspecs,
                 remote=remote, desc=f"could not fetch from {adjust_mod.redact(url)}", user_error=True,
                 settings=pin)
        if pull_request:
            self.git("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--", url,
                     f"+refs/{pull_request}/head:refs/{namespace}/pull/{pull_request}",
                     remote=remote, check=False, settings=pin)

    def resolve(self, name: str) -> str | None:
        """The commit ``name`` (a ref or object name) points to, or None."""
        result = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}",
                          check=False)
        return result.stdout.strip() if result.exit_code == 0 else None

    def find(self, ref: str, namespace: str) -> FoundRef | None:
        """Resolve the caller's ``ref`` among what was fetched into ``namespace``: a pull or
        merge request, a branch, a tag, or a commit id (in that order, like Repour)."""
        if is_pull_request(ref):
            commit = self.resolve(f"refs/{namespace}/pull/{ref}")
            return FoundRef("pull", ref, f"refs/{namespace}/pull/{ref}", commit) if commit else None
        if refs.ref_format_problem(refs.HEADS + ref.removeprefix(refs.HEADS).removeprefix(refs.TAGS)):
            return None
        short = ref.removeprefix(refs.HEADS).removeprefix(refs.TAGS)
        candidates = []
        if not ref.startswith(refs.TAGS):
            candidates.append(("branch", f"refs/{namespace}/heads/{short}"))
        if not ref.startswith(refs.HEADS):
            candidates.append(("tag", f"refs/{namespace}/tags/{short}"))
        for kind, local in candidates:
            commit = self.resolve(local)
            if commit:
                return FoundRef(kind, short, local, commit)
        if SHA_RE.match(ref):
            commit = self.resolve(ref)
            if commit and commit.startswith(ref):
                return FoundRef("commit", ref, commit, commit)
        return None

    def all_refspecs(self, namespace: str) -> list[str]:
        """Every fetched branch and tag, to the same name; names reserved for the server's
        archives are left out (an internal repository as origin carries them)."""
        listing = self.git("for-each-ref", "--format=%(refname)", f"refs/{namespace}/heads/",
                           f"refs/{namespace}/tags/").stdout.split()
        out = []
        for local in listing:
            kind, _, short = local[len(f"refs/{namespace}/"):].partition("/")
            dest = (refs.HEADS if kind == "heads" else refs.TAGS) + short
            if refs.is_reserved(dest):
                continue
            out.append(f"+{local}:{dest}")  # forced: the server's rules decide (see push_refspec)
        return out

    # --- pushing into the internal repository ---------------------------------------------

    def push_internal(self, target: Target, refspecs: Sequence[str], actor: Actor,
                      sessions: sessionmaker[Session] | None = None) -> None:
        """``git push`` into the repository's path, through the server's receive-pack and hooks
        (proc-receive applies the protection rules ref by ref and records the push).

        With ``sessions``, the hook hands the push to this process over an inherited socket
        (as it does to the SSH daemon), which records it here: the hook then needs no
        SQLAlchemy import, about a second per push on a loaded machine. Without, the hook
        records it itself (:mod:`gitserver.hookdb`)."""
        if not refspecs:
            return
        # The same limits as a user's push: an origin chosen by the caller must not fill the disk.
        push_limits = limits.PushLimits(self.config.max_blob_bytes, self.config.max_push_bytes,
                                        target.repo_quota_bytes, target.tenant_quota_bytes)
        receive_pack = git_argv(RECEIVE_PACK, target.path, self.config.hooks_dir,
                                settings=limits.git_settings(push_limits))[:-1]
        env = self.env(push_env(self.config, target, actor, push_limits))
        with contextlib.ExitStack() as stack:
            pass_fds: tuple[int, ...] = ()
            if sessions is not None:
                recorder = stack.enter_context(PushRecorder(sessions, self.config, target, actor))
                env[ENV_HOOK_FD] = str(recorder.child_fd)
                pass_fds = (recorder.child_fd,)
            result = self.git("push", "--porcelain", f"--receive-pack={shlex.join(receive_pack)}", "--",
                              str(target.path), *refspecs, remote=INTERNAL, env=env, check=False,
                              pass_fds=pass_fds)
        if result.exit_code == 0:
            return
        for limit in limits.limits_named(result.stderr):  # counted like a user's push over a limit
            metrics.push_over_limit(limit)
        refused = refused_refs(result.stdout)
        if refused:
            reasons = "; ".join(f"{ref} ({why})" for ref, why in refused)
            raise ProcessingError(f"the internal repository {target.full_name} refused: {reasons}",
                                  cmd=result.argv, stderr=result.stderr or result.stdout,
                                  error_type="PushRefused")
        raise ProcessingError(f"could not push to the internal repository {target.full_name}",
                              cmd=result.argv, exit_code=result.exit_code,
                              stderr=result.stderr, error_type="CommandError")


class PushRecorder:
    """Answers the proc-receive hook of one internal push over a socket pair, as the SSH
    session does (gitserver.pipelines.ledger.HookService): the intent before the refs move,
    then done with the pipeline queued. A thread serves it while this thread waits for
    ``git push``."""

    def __init__(self, sessions: sessionmaker[Session], config: Config, target: Target, actor: Actor) -> None:
        context = PushContext(repo_id=target.repo_id, user_id=actor.user_id, protocol=PUSH_PROTOCOL,
                              client_address=actor.client_address)
        self.service = ledger.HookService(sessions, context, config.http_base_url)
        self.target = target
        self._parent, self._child = socket.socketpair()
        self._thread = threading.Thread(target=ledger.serve_hook_socket, args=(self._parent, self.service),
                                        name="repour-push-recorder", daemon=True)

    @property
    def child_fd(self) -> int:
        return self._child.fileno()

    def __enter__(self) -> PushRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # git and its hooks have exited: closing our copy of the child end gives the serving
        # thread its EOF.
        self._child.close()
        self._thread.join(timeout=60)
        if self.service.pipeline_ids:
            metrics.push("recorded")


def push_env(config: Config, target: Target, actor: Actor,
             push_limits: limits.PushLimits = limits.NO_LIMITS) -> dict[str, str]:
    """What the hooks need when git is started by the server itself (see hookdb.py): the
    repository, the identity for the audit record, the permission already checked, where
    the database is, and the push's size limits."""
    return HookEnv(repo_id=target.repo_id, repo=target.full_name, permission="write",
                   protocol=PUSH_PROTOCOL, data_dir=str(config.data_dir),
                   database_url=config.effective_database_url, public_http_url=config.http_base_url,
                   user_id=actor.user_id, user=actor.user_name, client_address=actor.client_address,
                   config_file=os.environ.get(ENV_CONFIG, ""), limits=push_limits).to_env()


def refused_refs(porcelain: str) -> list[tuple[str, str]]:
    """(ref, reason) for each ref ``git push --porcelain`` reports as rejected."""
    out = []
    for line in porcelain.splitlines():
        if not line.startswith("!\t"):
            continue
        _flag, spec, summary = (line.split("\t") + ["", ""])[:3]
        dest = spec.rpartition(":")[2]
        reason = summary[summary.find("(") + 1: summary.rfind(")")] if "(" in summary else summary
        out.append((dest, reason.strip() or "rejected"))
    return out


# --- the operations ------------------------------------------------------------------------------

@dataclasses.dataclass
class Operation:
    """Everything an operation needs, whether it runs inline or in a job."""

    config: Config
    sessions: sessionmaker[Session]
    spec: dict[str, Any]
    actor: Actor
    stop: StopCheck
    output: Callable[[str], None] | None = None
    pipeline_id: int | None = None

    def target(self, url: str) -> Target:
        """The internal repository named by ``url`` (its permission was checked when the request
        was accepted; it cannot be deleted, so it is still there)."""
        tenant, name = internal_repo_name(url)
        with transaction(self.sessions) as session:
            row = session.scalar(
                select(models.Repository).join(models.Tenant, models.Tenant.id == models.Repository.tenant_id)
                .where(models.Tenant.name == tenant, models.Repository.name == name))
            if row is None:
                raise ProcessingError(f"repository {tenant}/{name} not found", error_type="RepoNotFound")
            return Target(repo_id=row.id, tenant=tenant, name=name,
                          path=self.config.repos_dir / tenant / f"{name}.git",
                          repo_quota_bytes=row.quota_bytes, tenant_quota_bytes=row.tenant.quota_bytes)


def do_clone(op: Operation) -> dict[str, Any]:
    """Repour's /clone: fetch the origin; into an empty target copy every branch and tag (so
    later /adjust calls find any ref), into one with history sync only ``ref`` (or everything
    when no ref is given)."""
    spec = op.spec
    target = op.target(spec["targetRepoUrl"])
    origin = check_origin(spec["originRepoUrl"], op.config)
    ref = spec.get("ref") or ""
    if ref and is_pull_request(ref):
        raise ProcessingError(f"{ref} is a pull/merge request ref: it is never pushed as a branch; "
                              "use /adjust with sync to build it", error_type="CloneError")
    with tempfile.TemporaryDirectory(prefix="gitserver-clone-") as tmp:
        work = GitWork(op.config, Path(tmp), bare=True, stop=op.stop, output=op.output)
        work.fetch(origin, ORIGIN, remote=ORIGIN)
        op.stop()
        found = None
        if ref:
            found = work.find(ref, ORIGIN)
            if found is None:
                raise ProcessingError(f"ref {ref!r} not found in {adjust_mod.redact(origin.text)}",
                                      error_type="RefNotFound")
        empty = is_empty_repository(target.path)
        if found is None or empty:
            work.push_internal(target, work.all_refspecs(ORIGIN), op.actor, op.sessions)
        if found is not None and (found.kind == "commit" or not empty):
            sync_ref(op, work, target, found)
    return dict(spec)


def is_empty_repository(path: Path) -> bool:
    """No branch and no tag yet (Repour's check_new_internal_repo)."""
    repo = pygit2.Repository(str(path))
    return not any(name.startswith((refs.HEADS, refs.TAGS)) for name in repo.references)


def sync_tag_name(ref: str) -> str:
    """Repour's tag for a commit id synced from upstream: ``repour-sync-<ref>``."""
    return f"{SYNC_TAG_PREFIX}{ref}"


def sync_ref(op: Operation, work: GitWork, target: Target, found: FoundRef) -> None:
    """Bring ``found`` from the origin into the target: a branch or tag is pushed (under the
    protection rules), a commit id gets the tag ``repour-sync-<id>``, as in Repour (a commit
    cannot be pushed without a ref). That tag is in the server's reserved namespace, so the
    server writes it itself, like adjust tags, and it never moves once made."""
    if found.kind != "commit":
        work.push_internal(target, [found.push_refspec()], op.actor, op.sessions)
        return
    name = sync_tag_name(found.name)
    repo = pygit2.Repository(str(target.path))
    if repo.references.get(refs.TAGS + name) is not None:
        return
    # The commit's objects first (nothing refers to them until the tag exists).
    work.git("update-ref", "refs/gitserver/sync", found.commit)
    work.git("--git-dir", str(target.path), "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--",
             str(work.dir), "refs/gitserver/sync", remote=INTERNAL, desc="could not store the synced commit")
    with contextlib.suppress(pygit2.AlreadyExistsError):
        pygit2.Repository(str(target.path)).references.create(refs.TAGS + name, pygit2.Oid(hex=found.commit))


def sync_on(spec: Mapping[str, Any]) -> bool:
    """Repour syncs from the origin only when both ``originRepoUrl`` and ``sync: true`` are given."""
    return bool(spec.get("originRepoUrl")) and spec.get("sync") is True


def do_adjust(op: Operation) -> dict[str, Any]:
    """Repour's /adjust: (sync,) check out, align, commit, tag, dedup by tree."""
    spec = op.spec
    target = op.target(spec["internal_url"]["readwrite"])
    ref: str = spec["ref"]
    request = adjust_mod.AdjustRequest.from_spec(spec)
    with tempfile.TemporaryDirectory(prefix="gitserver-adjust-") as tmp:
        # Resolved: paths under it hold no symbolic link but what the tool makes (see
        # adjust._read_json_file).
        work = GitWork(op.config, Path(tmp).resolve(), bare=False, stop=op.stop, output=op.output)
        found, internal = checkout_source(op, work, target, ref)
        op.stop()
        provider = adjust_mod.choose_provider(op.config, request.build_type)
        with tool_sandbox(op, provider, work) as job:
            outcome = adjust_mod.run_provider(provider, work.dir, request, op.config,
                                              _provider_runner(op, job), work.scratch)
        op.stop()
        commit = commit_changes(work, ref, outcome.adjust_type)
        tree = work.git("rev-parse", f"{commit}^{{tree}}").stdout.strip()
        tag, tag_commit = publish(op, work, target, commit=commit, tree=tree, version=outcome.version,
                                  ref=ref, pull_request=found.kind == "pull", upstream=found.commit,
                                  adjust_type=outcome.adjust_type)
    # Repour answers with the caller's own internal_url (the URLs PNC stored), not its own.
    internal_url = spec["internal_url"]
    return {"tag": tag, "commit": tag_commit,
            "url": {"readwrite": internal_url["readwrite"], "readonly": internal_url["readonly"]},
            "upstream_commit": found.commit, "is_ref_revision_internal": internal,
            "adjustResultData": outcome.result_data}


def checkout_source(op: Operation, work: GitWork, target: Target, ref: str) -> tuple[FoundRef, bool]:
    """Check out ``ref`` in the work tree: from the origin when syncing and the origin has it
    (pushing it into the target first, except pull requests), else from the target. Returns
    the ref found and whether it came from the internal repository (Repour's
    ``is_ref_revision_internal``)."""
    found = None
    if sync_on(op.spec):
        origin = check_origin(op.spec["originRepoUrl"], op.config)
        work.fetch(origin, ORIGIN, remote=ORIGIN, pull_request=ref if is_pull_request(ref) else None)
        found = work.find(ref, ORIGIN)
        if found is not None and found.kind != "pull":
            # Sync: the ref as upstream has it, under the protection rules (an upstream
            # force-push is refused here, and the tags made earlier keep their trees).
            sync_ref(op, work, target, found)
    internal = found is None
    if found is None:
        work.fetch(str(target.path), INTERNAL, remote=INTERNAL)
        found = work.find(ref, INTERNAL)
    if found is None:
        where = "neither upstream nor in" if sync_on(op.spec) else "in"
        raise ProcessingError(f"ref {ref!r} not found {where} the internal repository {target.full_name}",
                              error_type="RefNotFound")
    if found.kind == "pull":
        # A temporary local branch: it exists only in this scratch repository.
        branch = "pull-request-" + ref.rsplit("/", 1)[1]
        work.git("checkout", "-q", "--force", "-B", branch, found.commit)
    else:
        work.git("checkout", "-q", "--force", "--detach", found.commit)
    return found, internal


@contextlib.contextmanager
def tool_sandbox(op: Operation, provider: adjust_mod.Provider, work: GitWork) -> Iterator[Job | None]:
    """The sandbox the alignment tool runs in (docs/sandbox.md): the work tree and scratch
    directory become a leased UID's, ``.git`` stays the server's and read-only (its config
    could name commands the server's own git runs next), and all of it is the server's again
    afterwards. ``noop`` runs nothing and needs none."""
    if provider.kind == "noop":
        yield None
        return
    try:
        policy = sandbox.Policy.from_config(op.config)
        with sandbox.job(policy, work.root, protected=(work.dir / ".git",), give_back=True) as job:
            if op.output is not None:
                op.output(f"{job.describe(op.config.adjust_network)}\n")
            yield job
    except sandbox.SandboxUnavailable as exc:
        raise ProcessingError(f"the alignment tool was not run: {exc}", exit_code=1,
                              error_type="SandboxUnavailable") from exc


def _provider_runner(op: Operation, job: Job | None) -> adjust_mod.Runner:
    def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> adjust_mod.CommandResult:
        return run_command(argv, cwd=cwd, env=env, timeout=timeout, stop=op.stop, output=op.output,
                           sandbox=job, network=op.config.adjust_network)

    return run


def commit_changes(work: GitWork, ref: str, adjust_type: str) -> str:
    """Commit whatever the tool changed on top of the checked-out commit; the commit id."""
    work.git("add", "--all", "--", ".")
    if work.git("diff", "--cached", "--quiet", check=False).exit_code != 0:
        message = (f"Adjust: {adjust_type}\n\nCommit automatically generated by gitserver\n"
                   f"Original Reference: {ref}\nAdjust Type: {adjust_type}\n")
        work.git("commit", "-q", "--no-verify", "-m", message)
    return work.git("rev-parse", "HEAD").stdout.strip()


def tag_candidates(version: str | None, commit: str, pull_request: bool) -> list[str]:
    """Tag names to try, in order: the tool's version (else ``repour-<commit>``), prefixed for
    pull requests, then the same with ``-<commit[:8]>`` when the first is taken by another tree."""
    # A version is the adjusted project's (pushed content): one in the archive namespace
    # ("repour-<another commit>") could take the tag builders clone for that commit.
    if version and refs.is_reserved(refs.TAGS + version):
        version = None
    base = version or f"{refs.RESERVED_TAG_PREFIX}{commit}"
    if pull_request:
        base = PULL_REQUEST_TAG_PREFIX + base
    if refs.ref_format_problem(refs.TAGS + base) is not None:
        # A version git cannot use as a tag name: fall back to the commit-named tag.
        base = (PULL_REQUEST_TAG_PREFIX if pull_request else "") + f"{refs.RESERVED_TAG_PREFIX}{commit}"
    return [base, f"{base}-{commit[:8]}"]


def publish(op: Operation, work: GitWork, target: Target, *, commit: str, tree: str,
            version: str | None, ref: str, pull_request: bool, upstream: str,
            adjust_type: str) -> tuple[str, str]:
    """The tag for ``tree`` in ``target``: the one it got the first time, or a new one; either
    way with Repour's branch ``branch-repour-<tag>-<commit>`` on its commit (NCLSUP-1074: the
    commit is on a branch, so tools that list branches find it)."""
    tag, tag_commit = _publish_tag(op, work, target, commit=commit, tree=tree, version=version, ref=ref,
                                   pull_request=pull_request, upstream=upstream, adjust_type=adjust_type)
    ensure_tag_branch(target.path, tag, tag_commit)
    return tag, tag_commit


def tag_branch_name(tag: str, commit: str) -> str | None:
    """Repour's ``branch-repour-<tag>-<commit>``, or None when that is no valid ref name."""
    name = f"{refs.RESERVED_BRANCH_PREFIX}{tag}-{commit}"
    return None if refs.ref_format_problem(refs.HEADS + name) else name


def ensure_tag_branch(repo_path: Path, tag: str, commit: str) -> None:
    """Create the tag's branch unless it exists (a server-made ref, like archive branches: the
    reserved prefix keeps pushers from making or moving it)."""
    name = tag_branch_name(tag, commit)
    if name is None:
        return
    repo = pygit2.Repository(str(repo_path))
    if repo.references.get(refs.HEADS + name) is not None:
        return
    with contextlib.suppress(pygit2.AlreadyExistsError):
        repo.references.create(refs.HEADS + name, pygit2.Oid(hex=commit))


def _publish_tag(op: Operation, work: GitWork, target: Target, *, commit: str, tree: str,
                 version: str | None, ref: str, pull_request: bool, upstream: str,
                 adjust_type: str) -> tuple[str, str]:
    with transaction(op.sessions) as session:
        existing = find_archive(session, target.repo_id, tree)
        if existing is not None:
            return existing.tag, existing.commit_id
    # The adjusted commit's objects go into the repository first (nothing refers to them
    # until the tag exists, so an interruption here leaves nothing visible).
    work.git("update-ref", "refs/gitserver/adjusted", commit)
    internal_git = ["--git-dir", str(target.path)]
    work.git(*internal_git, "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--",
             str(work.dir), "refs/gitserver/adjusted", remote=INTERNAL, desc="could not store the adjusted commit")
    repo = pygit2.Repository(str(target.path))
    message = (f"Tag automatically generated by gitserver\nOriginal Reference: {ref}\n"
               f"Adjust Type: {adjust_type}\nUpstream Commit: {upstream}\n")
    tag, tag_commit = _create_or_reuse_tag(repo, tag_candidates(version, commit, pull_request),
                                           commit, tree, message)
    row = models.Archive(repo_id=target.repo_id, tree_id=tree, tag=tag, commit_id=tag_commit,
                         source_commit=upstream, source_ref=ref, pipeline_id=op.pipeline_id)
    try:
        with transaction(op.sessions) as session:
            session.add(row)
    except IntegrityError:
        # Another adjust (or the push pipeline's archive step) recorded this tree a moment
        # ago: its tag is the tree's tag from now on.
        with transaction(op.sessions) as session:
            winner = find_archive(session, target.repo_id, tree)
            if winner is None:
                raise
            return winner.tag, winner.commit_id
    log.info("adjusted %s %s (%s) as %s", target.full_name, ref, upstream, tag)
    return tag, tag_commit


def _create_or_reuse_tag(repo: pygit2.Repository, candidates: Sequence[str], commit: str, tree: str,
                         message: str) -> tuple[str, str]:
    """Create the first free candidate tag, or reuse one that already names the same tree."""
    for name in candidates:
        existing = repo.references.get(refs.TAGS + name)
        if existing is not None:
            peeled = existing.peel(pygit2.Commit)
            if str(peeled.tree_id) == tree:
                return name, str(peeled.id)
            continue  # tags never move: a taken name with another tree → the next candidate
        tagger = pygit2.Signature(COMMITTER_NAME, COMMITTER_EMAIL, int(time.time()), 0)
        try:
            repo.create_tag(name, pygit2.Oid(hex=commit), pygit2.enums.ObjectType.COMMIT, tagger, message)
        except pygit2.AlreadyExistsError:
            existing = repo.references.get(refs.TAGS + name)
            if existing is not None and str(existing.peel(pygit2.Commit).tree_id) == tree:
                return name, str(existing.peel(pygit2.Commit).id)
            continue
        return name, commit
    raise ProcessingError(f"tags {' and '.join(candidates)} already exist with other content",
                          error_type="TagConflict")


RUNNERS: dict[str, Callable[[Operation], dict[str, Any]]] = {"clone": do_clone, "adjust": do_adjust}


# --- outcome → Repour's status and body ------------------------------------------------------------

def execute(op_name: str, op: Operation) -> tuple[int, dict[str, Any]]:
    """Run an operation; (200, result) or (400, processing error) or (500, no internals).
    Cancellation (JobCancelled) and release (JobReleased) propagate."""
    started = time.monotonic()
    outcome = "cancelled"
    try:
        status, body = _execute(op_name, op)
        outcome = str(status)
        return status, body
    finally:
        metrics.repour_operation(op_name, outcome, time.monotonic() - started)


def _execute(op_name: str, op: Operation) -> tuple[int, dict[str, Any]]:
    try:
        return 200, RUNNERS[op_name](op)
    except (jobs.JobCancelled, jobs.JobReleased):
        raise
    except ProcessingError as exc:
        body = described_error_body(exc)
        log.info("repour %s failed: %s (reference %s)", op_name, exc.desc, body["error_traceback"])
        return 400, body
    except Exception:  # noqa: BLE001  (logged once here; the client gets a reference only)
        reference = uuid.uuid4().hex
        log.exception("repour %s failed unexpectedly (reference %s)", op_name, reference)
        return 500, internal_error_body(reference)


def described_error_body(exc: ProcessingError) -> dict[str, Any]:
    """Repour's body for a described error: the error's fields, ``error_type`` and
    ``error_traceback``. Repour puts a hash of its stack trace there; ours is a reference the
    server's log line carries, so a stack trace never reaches the caller."""
    return {**exc.body(), "error_traceback": uuid.uuid4().hex}


def internal_error_body(reference: str) -> dict[str, Any]:
    return {"error_type": "InternalError", "error_traceback": reference,
            "desc": f"the server failed to handle this request; the error was logged as {reference}"}


def cancelled_body(task_id: str | None) -> dict[str, Any]:
    """What a synchronous caller gets when /cancel stopped its request (130: killed by a signal,
    as shells report it)."""
    desc = f"task {task_id} was cancelled" if task_id else "the request was cancelled"
    return described_error_body(ProcessingError(desc, exit_code=130, error_type="Cancelled"))


# --- pipelines: the durable record of each operation -----------------------------------------

def create_pipeline(session: Session, *, kind: str, repo_id: int, spec: Mapping[str, Any],
                    status: str) -> models.Pipeline:
    """The Pipeline row of a clone/adjust (kind), visible in the pipelines API; ``task_id`` is
    the request's taskId, by which /cancel finds it."""
    ref = spec.get("ref") or ""
    pipeline = models.Pipeline(repo_id=repo_id, kind=kind, status=status, ref=str(ref)[:1024],
                               task_id=(spec.get("taskId") or None), request=json.dumps(redacted_spec(spec)),
                               started_at=utcnow() if status == models.RUNNING else None)
    session.add(pipeline)
    session.flush()
    return pipeline


def redacted_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The request as stored (and listed by the pipelines API): passwords in URLs hidden."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return adjust_mod.redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(dict(spec))


def finish_pipeline(session: Session, pipeline_id: int, status_code: int | None, body: Mapping[str, Any],
                    state: str | None = None) -> models.Pipeline | None:
    pipeline = session.get(models.Pipeline, pipeline_id)
    if pipeline is None:
        return None
    now = utcnow()
    pipeline.status = state or (models.SUCCEEDED if status_code == 200 else models.FAILED)
    pipeline.finished_at = now
    pipeline.result = json.dumps(body)
    if status_code is not None and status_code != 200:
        pipeline.error = str(body.get("desc") or body.get("error_type") or "failed")[:4000]
    if isinstance(body.get("tag"), str):
        pipeline.archive_tag = body["tag"]
    if isinstance(body.get("commit"), str):
        pipeline.commit = body["commit"]
    started = pipeline.started_at or pipeline.created_at
    if started is not None:
        metrics.pipeline_finished(pipeline.status, (now - started).total_seconds())
    session.flush()
    return pipeline


class InlineLease:
    """The lease of a synchronous run, held by this API process like a worker holds a job's.

    A synchronous /clone or /adjust runs inside the request, but its Pipeline row must not
    outlive the process: the request's ``repour`` job (see :func:`hold_inline`) is claimed by
    this process, and a heartbeat thread renews its lease while the operation runs. If the
    process dies, the lease expires and a worker's ordinary claim takes the job over
    (:func:`take_over_inline`), which ends the pipeline.

    The same thread polls for a cancel (``/cancel/{task_id}`` or the pipelines API, from any
    replica) about once a second. The operation's stop check (the instance, called) then
    raises :class:`~gitserver.pipelines.jobs.JobCancelled`, or
    :class:`~gitserver.pipelines.jobs.JobReleased` when the lease was lost (this process stalled
    past it and a worker took the job over: the worker owns the pipeline from then on).
    """

    def __init__(self, sessions: sessionmaker[Session], claim: jobs.Claim, lease_seconds: float,
                 poll: float = INLINE_CANCEL_POLL) -> None:
        self.sessions = sessions
        self.claim = claim
        self.lease_seconds = lease_seconds
        # Renew three times per lease (a missed renewal or two is survived); poll at least as often.
        self.renew_every = max(0.2, lease_seconds / 3)
        self.poll = min(poll, self.renew_every)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"repour-lease-{claim.job_id}", daemon=True)

    def __enter__(self) -> InlineLease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def __call__(self) -> None:
        if self.lost.is_set():
            raise jobs.JobReleased(f"job {self.claim.job_id}: lease lost")
        if self.cancelled.is_set():
            raise jobs.JobCancelled(f"pipeline {self.claim.pipeline_id} was cancelled")

    def _beat(self) -> None:
        last_renew = time.monotonic()
        while not self._done.wait(self.poll):
            try:
                with transaction(self.sessions) as session:
                    if jobs.cancel_requested(session, [self.claim.job_id]):
                        self.cancelled.set()
                    if time.monotonic() - last_renew >= self.renew_every:
                        if not jobs.renew(session, [self.claim], self.lease_seconds):
                            log.warning("repour job %s: lease lost; a worker took over the request",
                                        self.claim.job_id)
                            self.lost.set()
                            return
                        last_renew = time.monotonic()
            except Exception:  # noqa: BLE001  (database hiccup: the next beat retries)
                log.exception("repour job %s: lease heartbeat failed", self.claim.job_id)


def api_owner() -> str:
    """The lease owner of synchronous runs in this process (a worker's owner names its host and
    pid the same way, so an operator can tell who holds what)."""
    return f"api:{socket.gethostname()}:{os.getpid()}"


def hold_inline(session: Session, config: Config, *, op_name: str, pipeline_id: int) -> jobs.Claim:
    """The ``repour`` job of a synchronous request, held by this process, in the caller's
    transaction (committed with the pipeline, so the pipeline is never without a lease).

    The payload holds no request: a worker never re-runs it (see :func:`take_over_inline`),
    so the origin URLs (which may carry credentials) are not copied into the queue."""
    return jobs.hold(session, JOB_KIND, {"op": op_name, "mode": INLINE_MODE, "max_attempts": 1},
                     api_owner(), config.job_lease_seconds, pipeline_id=pipeline_id)


def lease_lost_body() -> dict[str, Any]:
    """What a synchronous caller gets when its request lost its lease: retry (idempotent)."""
    return described_error_body(ProcessingError(
        "this API process stalled past its lease and the request was taken over; "
        "send it again (clone and adjust are idempotent)", exit_code=LEASE_LOST_EXIT_CODE, error_type="LeaseLost"))


def run_inline(runtime: Any, op_name: str, spec: dict[str, Any], actor: Actor,
               claim: jobs.Claim) -> tuple[int, dict[str, Any]]:
    """A synchronous request: the same operation, in this process, under ``claim``'s lease,
    recorded in its pipeline. The job and the pipeline are finished in one transaction, and
    only while this process still holds the lease; otherwise the worker that took over has
    recorded the pipeline's end, and the caller is told to retry (503)."""
    pipeline_id = claim.pipeline_id
    if pipeline_id is None:
        raise ValueError("a synchronous run needs its pipeline")
    logger = jobs.JobContext(runtime=runtime, job_id=claim.job_id, kind=JOB_KIND, payload={}, attempts=1,
                             pipeline_id=pipeline_id)
    lease = InlineLease(runtime.sessions, claim, runtime.config.job_lease_seconds)
    op = Operation(config=runtime.config, sessions=runtime.sessions, spec=spec, actor=actor,
                   stop=lease, output=logger.log, pipeline_id=pipeline_id)
    state: str | None = None
    with lease:
        try:
            status, body = execute(op_name, op)
        except jobs.JobCancelled:
            status, body, state = 400, cancelled_body(spec.get("taskId")), models.CANCELLED
        except jobs.JobReleased:
            return 503, lease_lost_body()
    with transaction(runtime.sessions) as session:
        # Guarded by the lease: exactly one of this process and a worker records the end.
        if not jobs.finish(session, claim, state or models.SUCCEEDED, "cancelled" if state else ""):
            log.warning("repour job %s: lease lost before the result was recorded", claim.job_id)
            return 503, lease_lost_body()
        if state == models.CANCELLED:
            finish_pipeline(session, pipeline_id, None, {}, state=models.CANCELLED)
        else:
            finish_pipeline(session, pipeline_id, status, body)
    return status, body


def take_over_inline(ctx: jobs.JobContext) -> None:
    """A worker claimed the job of a synchronous request whose API process stopped renewing
    its lease (it died, or stalled past the lease): end the pipeline, never re-run it.

    Failing rather than re-running, because the only party waiting for the result was the
    HTTP client of the process that died: its connection is gone, there is no callback to send
    the result to, and it will send the request again (Repour's clients retry), which then
    gets the same answer since clone and adjust are idempotent (fast-forward-only pushes, tags
    deduplicated by tree). A re-run here would spend an alignment run (minutes) for nobody,
    concurrently with that retry. A cancel requested meanwhile ends it as cancelled.
    """
    pipeline_id = ctx.pipeline_id
    if pipeline_id is None:
        raise ValueError(f"repour job {ctx.job_id} of a synchronous request has no pipeline")
    with transaction(ctx.runtime.sessions) as session:
        pipeline = session.get(models.Pipeline, pipeline_id)
        if pipeline is None or pipeline.status in models.FINAL_STATES:
            return
        if jobs.cancel_requested(session, [ctx.job_id]):
            finish_pipeline(session, pipeline_id, None, {}, state=models.CANCELLED)
            return
        body = described_error_body(ProcessingError(INTERRUPTED_DESC, exit_code=LEASE_LOST_EXIT_CODE,
                                                    error_type="Interrupted"))
        finish_pipeline(session, pipeline_id, 503, body, state=models.FAILED)
    ctx.log(f"*** {INTERRUPTED_DESC}\n")
    log.warning("pipeline %s: the API process running it stopped; marked failed", pipeline_id)


# --- callback mode ---------------------------------------------------------------------------------

# Request headers PNC sends for its log and trace context; passed on to the callback (and into
# the pipeline log), as Repour and Reqour do, so PNC's log aggregation ties them together.
CONTEXT_HEADERS = ("log-user-id", "log-request-context", "log-process-context", "log-expires", "log-tmp",
                   "process-context-variant", "trace-id", "span-id", "traceparent", "tracestate")
CONTEXT_VALUE_MAX = 1000


def request_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The context headers of a request (names lower-case); values that could not be sent
    again as a header (line breaks, control characters, too long) are left out."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    out = {}
    for name in CONTEXT_HEADERS:
        value = lowered.get(name)
        if isinstance(value, str) and value.strip() and len(value) <= CONTEXT_VALUE_MAX \
                and value.isprintable():
            out[name] = value.strip()
    return out


def callback_target(spec: Mapping[str, Any], status: int) -> dict[str, Any] | None:
    """The callback to call for a result with ``status``: ``positiveCallback`` for a success and
    ``negativeCallback`` for a failure when given, else ``callback``. Legacy ``{url, method}``
    or pnc-api's ``Request`` (``{uri, method, headers: [{name, value}], attachment}``)."""
    if status == 200 and spec.get("positiveCallback"):
        chosen = spec["positiveCallback"]
    elif status != 200 and spec.get("negativeCallback"):
        chosen = spec["negativeCallback"]
    else:
        chosen = spec.get("callback")
    if not isinstance(chosen, Mapping):
        return None
    url = chosen.get("url") or chosen.get("uri")
    if not url:
        return None
    return {"url": str(url), "method": str(chosen.get("method") or "POST"),
            "headers": callback_headers(chosen.get("headers"))}


def callback_headers(headers: Any) -> dict[str, str]:
    """pnc-api's ``[{"name", "value"}]`` as a dict. Headers gitserver sets itself (Content-Type,
    Content-Length, ...) are left out: PNC's requests carry ``Content-Type: application/json``,
    which the callback has anyway."""
    from gitserver.pipelines import notify

    out: dict[str, str] = {}
    for item in headers or ():
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)):
            continue
        if item["name"].lower() not in notify.RESERVED_HEADERS:
            out[item["name"]] = item["value"]
    return out


def context_text(context: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in context.items())


def is_callback_mode(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("callback")) or bool(spec.get("positiveCallback") and spec.get("negativeCallback"))


def enqueue_callback(session: Session, config: Config, spec: Mapping[str, Any], status: int | None,
                     body: Mapping[str, Any], callback_id: str, pipeline_id: int | None,
                     context: Mapping[str, str] | None = None, face: str = "repour",
                     op_name: str = "") -> None:
    """Queue the delivery of the result (retried with backoff by the callback job), with the
    callback's own headers and the request's log/trace ``context`` headers; in Reqour's shape
    when the request came in Reqour's (``face``)."""
    from gitserver.pipelines import notify, reqour

    target = callback_target(spec, status or 0)
    if target is None:
        return
    if face == reqour.FACE:
        payload = reqour.callback_body(op_name, spec, status, body)
    else:
        payload = {**body, "callback": {"status": status, "id": callback_id}}
    # With a token endpoint configured, each attempt asks for the (cached) service account
    # token, so a retry an hour later does not carry an expired one.
    auth = notify.CREDENTIALS_SERVICE_TOKEN if service_token_allowed(config, target["url"]) else None
    notify.enqueue_callback(session, target["url"], target["method"], payload, pipeline_id=pipeline_id,
                            auth=auth, headers={**(context or {}), **target["headers"]})


def service_token_allowed(config: Config, url: str) -> bool:
    """Whether a callback to ``url`` may carry the service account's bearer token.

    The caller of /clone or /adjust (anyone who may write one repository) chooses the callback
    URL; attaching the token to every callback would hand the server's identity to any host
    they name. It goes only to hosts in ``oidc_callback_hosts``."""
    if not (config.oidc_token_url and config.oidc_client_id):
        return False
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return bool(host) and host in {h.lower() for h in config.oidc_callback_hosts}


def enqueue_operation(session: Session, *, op_name: str, spec: Mapping[str, Any], actor: Actor,
                      repo_id: int, context: Mapping[str, str] | None = None,
                      face: str = "repour") -> tuple[str, models.Pipeline]:
    """Callback mode: the pipeline and its ``repour`` job, in the caller's transaction."""
    callback_id = new_callback_id()
    pipeline = create_pipeline(session, kind=op_name, repo_id=repo_id, spec=spec, status=models.QUEUED)
    # One attempt: an operation that failed has already told the caller so (callback).
    jobs.enqueue(session, JOB_KIND, {"op": op_name, "spec": dict(spec), "callback_id": callback_id,
                                     "actor": actor.as_dict(), "max_attempts": 1,
                                     "context": dict(context or {}), "face": face},
                 pipeline_id=pipeline.id)
    return callback_id, pipeline


class LogCapture:
    """Passes an operation's output on to the pipeline log and keeps a copy (the alignment log
    Bifrost gets), up to :attr:`LIMIT` characters."""

    LIMIT = 16 * 1024 * 1024

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.size = 0

    def __call__(self, text: str) -> None:
        self.sink(text)
        if self.size < self.LIMIT:
            self.parts.append(text[: self.LIMIT - self.size])
            self.size += len(self.parts[-1])

    def text(self) -> str:
        return "".join(self.parts)


def run_repour_job(ctx: jobs.JobContext) -> None:
    """The ``repour`` job handler: run the operation, record it, queue the callback."""
    payload = ctx.payload
    if payload.get("mode") == INLINE_MODE:
        take_over_inline(ctx)
        return
    op_name = payload.get("op")
    if op_name not in RUNNERS or not isinstance(payload.get("spec"), dict) or ctx.pipeline_id is None:
        raise ValueError(f"malformed repour job payload (op {op_name!r})")
    runtime = ctx.runtime
    spec: dict[str, Any] = payload["spec"]
    callback_id = str(payload.get("callback_id") or new_callback_id())
    context = request_context(payload.get("context") or {})
    if context:
        log.info("repour %s (pipeline %s) for %s", op_name, ctx.pipeline_id, context_text(context))
        ctx.log(f"request context: {context_text(context)}\n")
    with transaction(runtime.sessions) as session:
        pipeline = session.get(models.Pipeline, ctx.pipeline_id)
        if pipeline is None or pipeline.status in models.FINAL_STATES:
            return  # cancelled before it ran (or already done by a previous holder of the lease)
        pipeline.status = models.RUNNING
        pipeline.started_at = pipeline.started_at or utcnow()

    def stop() -> None:
        ctx.check_cancelled()
        ctx.check_released()

    alignment_log = LogCapture(ctx.log)
    op = Operation(config=runtime.config, sessions=runtime.sessions, spec=spec,
                   actor=Actor.from_dict(payload.get("actor")), stop=stop, output=alignment_log,
                   pipeline_id=ctx.pipeline_id)
    beat = heartbeat.parse_config(spec.get("heartbeatConfig"))
    try:
        with heartbeat.Heartbeat(beat, allow_private=runtime.config.allow_private_networks):
            status, body = execute(op_name, op)
    except jobs.JobCancelled:
        # Like Repour: a cancelled task sends no callback (the canceller knows).
        with transaction(runtime.sessions) as session:
            finish_pipeline(session, ctx.pipeline_id, None, {}, state=models.CANCELLED)
        raise
    except jobs.JobReleased:
        with transaction(runtime.sessions) as session:
            pipeline = session.get(models.Pipeline, ctx.pipeline_id)
            if pipeline is not None:
                pipeline.status = models.QUEUED
        raise
    if op_name == "adjust" and runtime.config.repour_bifrost_url:
        # Like Repour and Reqour: the alignment log reaches Bifrost before the result reaches PNC.
        from gitserver.pipelines import bifrost

        if not bifrost.upload_final_log(runtime.config.repour_bifrost_url, alignment_log.text(), context,
                                        service_token_headers(runtime.config)):
            ctx.log("*** the alignment log could not be uploaded to Bifrost\n")
    with transaction(runtime.sessions) as session:
        finish_pipeline(session, ctx.pipeline_id, status, body)
        enqueue_callback(session, runtime.config, spec, status, body, callback_id, ctx.pipeline_id,
                         context=context, face=str(payload.get("face") or "repour"), op_name=op_name)


# --- /cancel/{task_id} -----------------------------------------------------------------------------

def cancel_task(session: Session, task_id: str,
                may_cancel: Callable[[models.Repository], bool]) -> int:
    """Cancel every unfinished clone/adjust whose request carried ``task_id`` and that the caller
    may cancel; the number cancelled. Whoever holds the job's lease kills the running command
    within about a second: a worker (callback mode) or the API process running a synchronous
    request (its :class:`InlineLease` polls for the cancel), on any replica."""
    pipelines = session.scalars(
        select(models.Pipeline).where(models.Pipeline.task_id == task_id,
                                      models.Pipeline.kind.in_(OPERATIONS),
                                      models.Pipeline.status.in_((models.QUEUED, models.RUNNING)))).all()
    count = 0
    for pipeline in pipelines:
        repo = session.get(models.Repository, pipeline.repo_id)
        if repo is None or not may_cancel(repo):
            continue
        has_job = session.scalar(select(models.Job.id).where(
            models.Job.pipeline_id == pipeline.id,
            models.Job.status.in_((models.QUEUED, models.RUNNING))).limit(1)) is not None
        if has_job:
            jobs.request_cancel(session, pipeline)
        else:
            pipeline.status = models.CANCELLED
            pipeline.finished_at = utcnow()
            pipeline.error = "cancelled"
        count += 1
    session.flush()
    return count


# --- callback authentication (OIDC client credentials) -----------------------------------------

@dataclasses.dataclass
class _CachedToken:
    value: str
    expires: float


class ServiceTokens:
    """Bearer tokens of the service account, from the client-credentials grant, cached until
    shortly before they expire. One instance per process (see :func:`service_token_headers`)."""

    # Renew this long before expiry, so a token never expires in flight.
    MARGIN = 30.0

    def __init__(self, post: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._clock = clock
        self._cache: dict[tuple[str, str], _CachedToken] = {}
        self._lock = threading.Lock()

    def token(self, token_url: str, client_id: str, secret: str, timeout: float = 10.0) -> str:
        key = (token_url, client_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expires - self.MARGIN > self._clock():
                return cached.value
            value, lifetime = self._fetch(token_url, client_id, secret, timeout)
            self._cache[key] = _CachedToken(value, self._clock() + lifetime)
            return value

    def _fetch(self, token_url: str, client_id: str, secret: str, timeout: float) -> tuple[str, float]:
        post = self._post
        if post is None:
            import requests

            post = requests.post
        resp = post(token_url, data={"grant_type": "client_credentials", "client_id": client_id,
                                     "client_secret": secret}, timeout=timeout)
        if resp.status_code != 200:
            raise RuntimeError(f"the token endpoint answered {resp.status_code}")
        data = resp.json()
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RuntimeError("the token endpoint's answer has no access_token")
        lifetime = data.get("expires_in", 300)
        return token, float(lifetime) if isinstance(lifetime, (int, float)) else 300.0


# Per-process cache: tokens are process state, not configuration (the configuration comes in
# with each call). Worker threads share it under its lock.
_SERVICE_TOKENS = ServiceTokens()


def service_token_headers(config: Config, tokens: ServiceTokens | None = None) -> dict[str, str]:
    """``Authorization: Bearer …`` for callbacks when an OIDC token endpoint is configured."""
    if not (config.oidc_token_url and config.oidc_client_id):
        return {}
    tokens = tokens or _SERVICE_TOKENS
    try:
        token = tokens.token(config.oidc_token_url, config.oidc_client_id,
                             config.oidc_service_account_secret)
    except Exception as exc:  # noqa: BLE001  (the callback still goes out; the receiver decides)
        log.warning("could not obtain a service account token for callbacks: %s", exc)
        metrics.callback_failed("token")
        return {}
    return {"Authorization": f"Bearer {token}"}

