"""Repour's /clone and /adjust: what each does to an internal repository, and how its outcome
becomes Repour's status and body (:func:`execute`).

* /clone fetches the origin (checked first, :func:`gitserver.repour.giturl.check_origin`) and
  pushes into the internal repository under the protection rules.
* /adjust (syncs,) checks out the ref, runs the alignment tool of the build type in a sandbox
  (:mod:`gitserver.repour.adjust`), commits what it changed and tags it. Tags made by /adjust
  are the server's own, like archive tags: written with pygit2 straight into the repository
  (never through a user-facing path), deduplicated by tree through the Archive table, so the
  same tree always gets the tag it got the first time.

Each operation runs the same way inline (a synchronous request, :mod:`gitserver.repour.inline`)
or as a ``repour`` job (callback mode, :mod:`gitserver.repour.job`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pygit2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gitserver.config import Config
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import refs
from gitserver.git.archive import RefCreator, RefLocked, TagWriter
from gitserver.git.store import repo_path
from gitserver.observe import metrics
from gitserver.pipelines import jobs
from gitserver.pipelines.archive import find_archive
from gitserver.policy import access
from gitserver.process import sandbox
from gitserver.process.sandbox import Job
from gitserver.provenance import archive_tags, signer
from gitserver.push import launcher
from gitserver.repour import answers, lfssync
from gitserver.repour.adjust import AdjustRequest, Provider, Runner, choose_provider, run_provider
from gitserver.repour.command import CommandResult, ProcessingError, StopCheck, redact, run_command
from gitserver.repour.giturl import check_origin, internal_repo_name, is_pull_request
from gitserver.repour.gitwork import (
    COMMITTER_EMAIL,
    COMMITTER_NAME,
    INTERNAL,
    ORIGIN,
    Actor,
    FoundRef,
    GitWork,
    Target,
)
from gitserver.repour.records import RepourOp
from gitserver.repour.results import described_error_body, internal_error_body
from gitserver.repour.worktree import kept_in_place, tree_from_work_tree, write_work_tree

log = logging.getLogger(__name__)

PULL_REQUEST_TAG_PREFIX = "Pull_Request-"
# Repour's tag for a commit id synced from upstream (/clone, /adjust with sync).
SYNC_TAG_PREFIX = "repour-sync-"
# Scratch refs of the temporary repository that hold a commit while it is fetched into the
# internal one (a fetch names a ref, not a bare object).
SYNC_REF = refs.PREFIX + "gitserver/sync"
ADJUSTED_REF = refs.PREFIX + "gitserver/adjusted"
# Repour's error_type when a ref the server makes could not be written with its log entry.
OWN_REFS_ERROR = "ReferenceLogError"


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
            row = access.find_repo(session, tenant, name)
            if row is None:
                raise ProcessingError(f"repository {tenant}/{name} not found", error_type="RepoNotFound")
            return Target(repo_id=row.id, tenant=tenant, name=name,
                          path=repo_path(self.config.repos_dir, tenant, name),
                          quotas=launcher.Quotas.of(session, row))


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
                raise ProcessingError(f"ref {ref!r} not found in {redact(origin.text)}",
                                      error_type="RefNotFound")
        empty = is_empty_repository(target.path)
        refspecs = work.all_refspecs(ORIGIN) if found is None or empty else []
        synced = found if found is not None and (found.kind == "commit" or not empty) else None
        # The LFS objects first: once a ref is in, a build may clone it.
        lfssync.bring_objects(op.config, op.sessions, work, target, origin,
                              [*(refspec.lstrip("+").split(":", 1)[0] for refspec in refspecs),
                               *([synced.local] if synced else [])], op.stop)
        op.stop()
        work.push_internal(target, refspecs, op.actor, op.sessions)
        if synced is not None:
            sync_ref(op, work, target, synced)
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
    work.git("update-ref", SYNC_REF, found.commit)
    work.git("--git-dir", str(target.path), "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--",
             str(work.dir), SYNC_REF, remote=INTERNAL, desc="could not store the synced commit")
    with own_refs(op) as key:  # with its log entry; one made meanwhile by another call stands
        archive_tags.create_refs(target.path, key, [(refs.TAGS + name, found.commit)])


@contextlib.contextmanager
def own_refs(op: Operation) -> Iterator[signer.Signer]:
    """The server's key for the refs it makes itself, each created with its entry in the
    reference log (gitserver.provenance.archive_tags); when they cannot be, nothing was made
    and the caller reads why."""
    try:
        yield archive_tags.load_key(op.config)
    except (archive_tags.RefsNotWritten, RefLocked) as exc:
        raise ProcessingError(str(exc), error_type=OWN_REFS_ERROR) from exc


def sync_on(spec: Mapping[str, Any]) -> bool:
    """Repour syncs from the origin only when both ``originRepoUrl`` and ``sync: true`` are given."""
    return bool(spec.get("originRepoUrl")) and spec.get("sync") is True


def do_adjust(op: Operation) -> dict[str, Any]:
    """Repour's /adjust: (sync,) check out, align, commit, tag, dedup by tree."""
    spec = op.spec
    target = op.target(spec["internal_url"]["readwrite"])
    ref: str = spec["ref"]
    request = AdjustRequest.from_spec(spec)
    with tempfile.TemporaryDirectory(prefix="gitserver-adjust-") as tmp:
        # Resolved: paths under it hold no symbolic link but what the tool makes (see
        # results.read_json_file).
        work = GitWork(op.config, Path(tmp).resolve(), bare=False, stop=op.stop, output=op.output)
        found, internal = checkout_source(op, work, target, ref)
        op.stop()
        provider = choose_provider(op.config, request.build_type)
        with kept_in_place(work.dir), tool_sandbox(op, provider, work) as job:
            outcome = run_provider(provider, work.dir, request, op.config,
                                   _provider_runner(op, job), work.scratch)
        op.stop()
        commit, tree = commit_changes(work, ref, outcome.adjust_type)
        tag, tag_commit = publish(op, work, target, commit=commit, tree=tree, version=outcome.version,
                                  ref=ref, pull_request=found.kind == "pull", upstream=found.commit,
                                  adjust_type=outcome.adjust_type)
    # Repour answers with the caller's own internal_url (the URLs PNC stored), not its own.
    return answers.adjust_result(tag=tag, commit=tag_commit, internal_url=spec["internal_url"],
                                 upstream_commit=found.commit, internal=internal, result_data=outcome.result_data)


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
        if found is not None:
            # A pull request is not pushed, but its tree is tagged below: its objects too.
            lfssync.bring_objects(op.config, op.sessions, work, target, origin, [found.local], op.stop)
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
    checkout(work, found.commit, "pull-request-" + ref.rsplit("/", 1)[1] if found.kind == "pull" else None)
    return found, internal


def checkout(work: GitWork, commit: str, branch: str | None) -> None:
    """Check ``commit`` out as plain files (:func:`worktree.write_work_tree`: no attributes,
    so what the tool leaves untouched reads back unchanged), on a temporary local ``branch``
    (a pull request's: it exists only in this scratch repository) or detached."""
    repo = pygit2.Repository(str(work.dir / ".git"))
    target = repo[pygit2.Oid(hex=commit)].peel(pygit2.Commit)
    write_work_tree(repo, target.tree, work.dir)
    # An index of the commit, for a tool that asks its own git about the tree's state.
    repo.index.read_tree(target.tree)
    repo.index.write()
    if branch is None:
        repo.set_head(target.id)
    else:
        repo.create_branch(branch, target, True)
        repo.set_head(refs.HEADS + branch)


@contextlib.contextmanager
def tool_sandbox(op: Operation, provider: Provider, work: GitWork) -> Iterator[Job | None]:
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


def _provider_runner(op: Operation, job: Job | None) -> Runner:
    def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> CommandResult:
        return run_command(argv, cwd=cwd, env=env, timeout=timeout, stop=op.stop, output=op.output,
                           sandbox=job, network=op.config.adjust_network)

    return run


def commit_changes(work: GitWork, ref: str, adjust_type: str) -> tuple[str, str]:
    """Commit whatever the tool changed on top of the checked-out commit; the commit and tree ids.

    The tree is read as plain files (:mod:`gitserver.repour.worktree`), never by git: the
    tool wrote it, and git would honour its attributes (filter drivers) and enter nested
    repositories whose config it also wrote, running their commands as the server."""
    repo = pygit2.Repository(str(work.dir / ".git"))
    head = repo.head.peel(pygit2.Commit)
    tree = tree_from_work_tree(repo, work.dir, head.tree, work.config.max_blob_bytes)
    if tree == head.tree_id:
        return str(head.id), str(tree)
    message = (f"Adjust: {adjust_type}\n\nCommit automatically generated by gitserver\n"
               f"Original Reference: {ref}\nAdjust Type: {adjust_type}\n")
    signature = pygit2.Signature(COMMITTER_NAME, COMMITTER_EMAIL, int(time.time()), 0)
    return str(repo.create_commit("HEAD", signature, signature, message, tree, [head.id])), str(tree)


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
    with own_refs(op) as key:
        create_refs = archive_tags.ref_creator(target.path, key)
        tag, tag_commit = _publish_tag(op, work, target, commit=commit, tree=tree, version=version, ref=ref,
                                       pull_request=pull_request, upstream=upstream, adjust_type=adjust_type,
                                       write_tag=archive_tags.tag_writer(key, COMMITTER_NAME, COMMITTER_EMAIL),
                                       create_refs=create_refs)
        ensure_tag_branch(create_refs, tag, tag_commit)
    return tag, tag_commit


def tag_branch_name(tag: str, commit: str) -> str | None:
    """Repour's ``branch-repour-<tag>-<commit>``, or None when that is no valid ref name."""
    name = f"{refs.RESERVED_BRANCH_PREFIX}{tag}-{commit}"
    return None if refs.ref_format_problem(refs.HEADS + name) else name


def ensure_tag_branch(create_refs: RefCreator, tag: str, commit: str) -> None:
    """Create the tag's branch unless it exists (a server-made ref, like archive branches: the
    reserved prefix keeps pushers from making or moving it), with its log entry."""
    name = tag_branch_name(tag, commit)
    if name is not None:
        create_refs([(refs.HEADS + name, commit)])


def _publish_tag(op: Operation, work: GitWork, target: Target, *, commit: str, tree: str,
                 version: str | None, ref: str, pull_request: bool, upstream: str,
                 adjust_type: str, write_tag: TagWriter, create_refs: RefCreator) -> tuple[str, str]:
    with transaction(op.sessions) as session:
        existing = find_archive(session, target.repo_id, tree)
        if existing is not None:
            return existing.tag, existing.commit_id
    # The adjusted commit's objects go into the repository first (nothing refers to them
    # until the tag exists, so an interruption here leaves nothing visible).
    work.git("update-ref", ADJUSTED_REF, commit)
    internal_git = ["--git-dir", str(target.path)]
    # From the server's own .git by name: git never looks for a repository in the tool's tree.
    work.git(*internal_git, "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", "--",
             str(work.dir / ".git"), ADJUSTED_REF, remote=INTERNAL,
             desc="could not store the adjusted commit")
    repo = pygit2.Repository(str(target.path))
    message = (f"Tag automatically generated by gitserver\nOriginal Reference: {ref}\n"
               f"Adjust Type: {adjust_type}\nUpstream Commit: {upstream}\n")
    tag, tag_commit = _create_or_reuse_tag(repo, tag_candidates(version, commit, pull_request),
                                           commit, tree, message, write_tag, create_refs)
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
                         message: str, write_tag: TagWriter, create_refs: RefCreator) -> tuple[str, str]:
    """Create the first free candidate tag, or reuse one that already names the same tree."""
    for name in candidates:
        existing = repo.references.get(refs.TAGS + name)
        if existing is None:
            tag_id = write_tag(repo, commit, name, int(time.time()), message)  # signed
            if create_refs([(refs.TAGS + name, tag_id)]):
                return name, commit
            existing = repo.references.get(refs.TAGS + name)  # another call's, made a moment ago
            if existing is None:
                continue
        peeled = existing.peel(pygit2.Commit)
        if str(peeled.tree_id) == tree:
            return name, str(peeled.id)
        # tags never move: a taken name with another tree → the next candidate
    raise ProcessingError(f"tags {' and '.join(candidates)} already exist with other content",
                          error_type="TagConflict")


RUNNERS: dict[str, Callable[[Operation], dict[str, Any]]] = {RepourOp.CLONE: do_clone, RepourOp.ADJUST: do_adjust}


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
    except Exception:
        reference = uuid.uuid4().hex
        log.exception("repour %s failed unexpectedly (reference %s)", op_name, reference)
        return 500, internal_error_body(reference)
