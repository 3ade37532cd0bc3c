"""git in a temporary repository: fetching from an origin, resolving the caller's ref, and
pushing into an internal repository through the server's own receive-pack and hooks.

git runs with a protocol allow-list on its command line, no hooks, no prompts, no credentials
of the server's account, object checking on, and a timeout. What reaches an internal
repository arrives through the real ``git push`` into its path, so the protection rules refuse
exactly what they refuse to any pusher; the hook hands the push back to this process
(gitserver.push.launcher), which records it (protocol ``repour``) and queues its pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.git import fsck, refs
from gitserver.git.store import git_env
from gitserver.observe import metrics
from gitserver.push import launcher, limits
from gitserver.push.ledger import PushContext
from gitserver.repour.command import (
    USER_ERROR_EXIT_CODE,
    CommandResult,
    ProcessingError,
    StopCheck,
    redact,
    run_command,
)
from gitserver.repour.giturl import GitUrl, is_pull_request

PUSH_PROTOCOL = "repour"
# What the hooks are told of an internal push: the server itself writes, the caller's access
# was checked before the operation started.
PUSH_PERMISSION = "write"

# Identity of the commits and tags the server makes while adjusting.
COMMITTER_NAME = "gitserver"
COMMITTER_EMAIL = "gitserver@localhost"

SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")
# Namespaces inside the temporary repository, one per remote, so that origin and internal refs
# (and tags, which git would otherwise merge) never mix.
ORIGIN, INTERNAL = "origin", "internal"


def pull_ref(namespace: str, name: str) -> str:
    """Where the pull or merge request ``name`` (``pull/7``) fetched into ``namespace`` is kept."""
    return f"{refs.PREFIX}{namespace}/pull/{name}"


@dataclasses.dataclass(frozen=True)
class Target:
    """The internal repository an operation writes to, and who asked."""

    repo_id: int
    tenant: str
    name: str
    path: Path
    quotas: launcher.Quotas = launcher.NO_QUOTAS  # what its pushes are held to

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

    @property
    def git_dir(self) -> Path:
        """The temporary repository's git directory."""
        return self.dir if self.bare else self.dir / ".git"

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
            # Symbolic links of an untrusted tree are never checked out as links (the adjust
            # work tree is written by repour/worktree.py, which does the same), so an alignment
            # tool rewriting "pom.xml" can never write through it to a server file.
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
        env = git_env(HOME=str(self.scratch), GIT_SSH_COMMAND=shlex.join(ssh), GIT_ASKPASS="", SSH_ASKPASS="",
                      GIT_COMMITTER_NAME=COMMITTER_NAME, GIT_COMMITTER_EMAIL=COMMITTER_EMAIL,
                      GIT_AUTHOR_NAME=COMMITTER_NAME, GIT_AUTHOR_EMAIL=COMMITTER_EMAIL)
        env.update(extra or {})
        return env

    def git(self, *args: str, cwd: Path | None = None, remote: str | None = None,
            env: Mapping[str, str] | None = None, check: bool = True,
            desc: str = "", user_error: bool = False, pass_fds: Sequence[int] = (),
            settings: Mapping[str, str] | None = None) -> CommandResult:
        argv = ["git"]
        for key, value in {**self._settings(remote), **(settings or {})}.items():
            argv += ["-c", f"{key}={value}"]
        argv += list(args)
        result = run_command(argv, cwd=cwd or self.dir, env=env or self.env(),
                             timeout=self.config.repour_git_timeout, stop=self.stop, output=self.output,
                             pass_fds=pass_fds)
        if check and result.exit_code != 0:
            raise ProcessingError(desc or f"git {args[0]} failed", cmd=argv,
                                  exit_code=USER_ERROR_EXIT_CODE if user_error else result.exit_code,
                                  stderr=result.stderr, error_type="CommandError")
        return result

    # --- fetching -------------------------------------------------------------------------

    def fetch(self, source: GitUrl | str, namespace: str, *, remote: str, pull_request: str | None = None) -> None:
        """All branches and tags of ``source`` into ``refs/<namespace>/{heads,tags}/``, and the
        pull/merge request's head when one is named. A checked origin (:class:`GitUrl`) is
        fetched from the addresses its check validated."""
        url = source.fetch_url if isinstance(source, GitUrl) else source
        pin = source.git_settings() if isinstance(source, GitUrl) else {}
        refspecs = [f"+{prefix}*:{refs.namespaced(namespace, prefix)}*" for prefix in (refs.HEADS, refs.TAGS)]
        self.git("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--", url, *refspecs,
                 remote=remote, desc=f"could not fetch from {redact(url)}", user_error=True,
                 settings=pin)
        if pull_request:
            self.git("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--", url,
                     f"+{refs.PREFIX}{pull_request}/head:{pull_ref(namespace, pull_request)}",
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
            commit = self.resolve(pull_ref(namespace, ref))
            return FoundRef("pull", ref, pull_ref(namespace, ref), commit) if commit else None
        if refs.ref_format_problem(refs.HEADS + ref.removeprefix(refs.HEADS).removeprefix(refs.TAGS)):
            return None
        short = ref.removeprefix(refs.HEADS).removeprefix(refs.TAGS)
        candidates = []
        if not ref.startswith(refs.TAGS):
            candidates.append(("branch", refs.namespaced(namespace, refs.HEADS + short)))
        if not ref.startswith(refs.HEADS):
            candidates.append(("tag", refs.namespaced(namespace, refs.TAGS + short)))
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
        listing = self.git("for-each-ref", "--format=%(refname)", refs.namespaced(namespace, refs.HEADS),
                           refs.namespaced(namespace, refs.TAGS)).stdout.split()
        out = []
        for local in listing:
            kind, _, short = local[len(refs.namespaced(namespace, refs.PREFIX)):].partition("/")
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
        records it itself (:mod:`gitserver.push.hookdb`)."""
        if not refspecs:
            return
        # The same limits as a user's push: an origin chosen by the caller must not fill the disk.
        # The server writes here itself (the permission is "write"), so only the reserved
        # names and the limits can refuse it whole.
        push = launcher.ReceivePack(
            self.config, PushContext(repo_id=target.repo_id, user_id=actor.user_id, protocol=PUSH_PROTOCOL,
                                     client_address=actor.client_address),
            target.path, target.full_name, PUSH_PERMISSION, user=actor.user_name,
            limits=target.quotas.push_limits(self.config))
        receive_pack = push.argv()[:-1]  # git push names the repository itself
        env = self.env(push.hook_env().to_env())
        with contextlib.ExitStack() as stack:
            pass_fds: tuple[int, ...] = ()
            if sessions is not None:
                # The hooks hand the push back to this process, as they do to the SSH daemon:
                # pre-receive's checks, then proc-receive's intent and done (gitserver.push.launcher).
                hooks = stack.enter_context(push.hook_socket(sessions))
                env.update(hooks.env())
                pass_fds = hooks.pass_fds
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


def refused_refs(porcelain: str) -> list[tuple[str, str]]:
    """(ref, reason) for each ref ``git push --porcelain`` reports as rejected."""
    out = []
    for line in porcelain.splitlines():
        if not line.startswith("!\t"):
            continue
        _flag, spec, summary = [*line.split("\t"), "", ""][:3]
        dest = spec.rpartition(":")[2]
        reason = summary[summary.find("(") + 1: summary.rfind(")")] if "(" in summary else summary
        out.append((dest, reason.strip() or "rejected"))
    return out
