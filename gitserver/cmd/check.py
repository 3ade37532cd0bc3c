"""``gitserver check [--repair]``: verify what the server promises, in the spirit of ``git fsck``.

* The ledger (docs/ledger.md): every ref on disk holds a value that a recorded push set, and
  the ledger and the refs' reflogs tell the same history.
* Every archive: its tag names the recorded commit whose tree is the recorded tree; a push
  archive's commit is the orphan commit with the fixed identity, date and message, and
  ``branch-repour-<commit>`` points at it.
* The hooks and the repository settings that protected history relies on.
* Git LFS, for repositories that use it: every pointer in their refs names an object the
  repository holds and the object store has (docs/lfs.md).

Each breach is one line ``<tenant/repo> <ref or item>: <what is wrong>``. ``--repair`` records
what the ledger misses (as the reconciler does), reinstalls the hooks and rewrites the
protection settings; it never moves or deletes a ref. Exit status 0 when nothing is wrong
(after repair), 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import TextIO

import pygit2
from sqlalchemy import select

from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.git import archive as git_archive
from gitserver.git import refs, refstate
from gitserver.git.store import (
    HOOK_NAMES,
    PROTECTED_CONFIG,
    RETIRED_HOOK_NAMES,
    install_hooks,
    rendered_hook,
)
from gitserver.lfs import pointers
from gitserver.lfs.service import LfsService
from gitserver.pipelines import reflog_audit
from gitserver.provenance import audit, keys, trust
from gitserver.provenance.pushlog import PushLog
from gitserver.push import reconcile, refjudge
from gitserver.runtime import Runtime

log = logging.getLogger(__name__)

_HOOK_PYTHON_RE = re.compile(r"^exec ('(?:[^']|'\\'')*') -m gitserver hook ", re.MULTILINE)


@dataclasses.dataclass
class Report:
    breaches: list[str] = dataclasses.field(default_factory=list)
    repaired: list[str] = dataclasses.field(default_factory=list)
    history: list[str] = dataclasses.field(default_factory=list)  # the breaches of the reference log's checks
    repos: int = 0
    archives: int = 0
    refs: int = 0

    def breach(self, where: str, item: str, what: str) -> None:
        self.breaches.append(f"{where} {item}: {what}")


def run(runtime: Runtime, *, repair: bool = False, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr) -> int:
    """Check everything; with ``repair``, fix what can be fixed and check again."""
    report = check(runtime, repair=repair)
    if repair and (report.repaired or report.breaches):
        for line in report.repaired:
            print(f"repaired: {line}", file=out)
        report = check(runtime, repair=False)
    for line in report.breaches:
        print(line, file=out)
    print(f"checked {report.repos} repositories, {report.refs} branches and tags, {report.archives} archives: "
          f"{len(report.breaches)} problem(s)", file=err)
    return 1 if report.breaches else 0


def check(runtime: Runtime, *, repair: bool) -> Report:
    report = Report()
    cfg = runtime.config
    _check_hooks(cfg.hooks_dir, cfg.data_dir, report, repair)
    with transaction(runtime.sessions) as session:
        repos = reconcile.list_repos(session)
    lfs = LfsService(cfg, runtime.sessions, runtime.store)
    for repo in repos:
        report.repos += 1
        path = runtime.store.path(repo.tenant, repo.name)
        if not (path / "HEAD").is_file():
            report.breach(repo.full_name, "-", f"repository is missing on disk ({path})")
            continue
        _check_config(repo.full_name, path, cfg.hooks_dir, report, repair)
        _check_ledger(runtime, repo, path, report, repair)
        _check_archives(runtime, repo, path, report)
        _check_lfs(runtime, lfs, repo, path, report)
        _check_rules(runtime, repo, path, report)
        _check_history(runtime, repo, path, report)
    return report


def _check_lfs(runtime: Runtime, lfs: LfsService, repo: reconcile.RepoRef, path: Path, report: Report) -> None:
    """Pointers whose objects the server lacks: no ``lfs_objects`` row, or no content in the
    store. Only for repositories that hold LFS objects or route files through LFS."""
    try:
        with transaction(runtime.sessions) as session:
            holds = session.scalar(select(models.LfsObject.id).where(models.LfsObject.repo_id == repo.id)
                                   .limit(1)) is not None
        if not holds and not pointers.uses_lfs(path):
            return
        found = list(pointers.pointers_in(path))
        with transaction(runtime.sessions) as session:
            held = lfs.held(session, repo.id, (p.oid for p in found))
        for pointer in found:
            if pointer.oid not in held:
                report.breach(repo.full_name, pointer.path,
                              f"LFS object {pointer.oid} ({pointer.size} bytes) was never uploaded")
            elif not lfs.objects.exists(pointer.oid):
                report.breach(repo.full_name, pointer.path,
                              f"LFS object {pointer.oid} is recorded but missing from the object store")
    except Exception as exc:  # one line names it; the log has the traceback
        log.exception("checking the LFS objects of %s failed", repo.full_name)
        report.breach(repo.full_name, "lfs", f"could not be checked ({type(exc).__name__}: {exc})"[:300])


def _check_rules(runtime: Runtime, repo: reconcile.RepoRef, path: Path, report: Report) -> None:
    """Refs that moved, while a rule list governed them, without being judged by it
    (docs/ref-rules.md): written outside receive-pack and recorded by the reconciler."""
    with transaction(runtime.sessions) as session:
        for ref, what in refjudge.unjudged_moves(session, repo.id, path):
            report.breach(repo.full_name, ref, what)


def _check_hooks(hooks_dir: Path, data_dir: Path, report: Report, repair: bool) -> None:
    problems = []
    for name in HOOK_NAMES:
        path = hooks_dir / name
        try:
            text = path.read_text()
        except OSError:
            problems.append((name, "hook is missing"))
            continue
        if not os.access(path, os.X_OK):
            problems.append((name, "hook is not executable"))
        match = _HOOK_PYTHON_RE.search(text)
        python = match.group(1)[1:-1].replace("'\\''", "'") if match else sys.executable
        if text != rendered_hook(name, data_dir, python):
            problems.append((name, "hook differs from the one gitserver installs"))
        elif not os.access(python, os.X_OK):
            problems.append((name, f"hook runs {python}, which is not an executable"))
    for name in RETIRED_HOOK_NAMES:
        if (hooks_dir / name).exists():
            problems.append((name, "hook of an older release is still installed"))
    if problems and repair:
        install_hooks(hooks_dir, data_dir)
        report.repaired.append(f"hooks reinstalled in {hooks_dir}")
        return
    for name, what in problems:
        report.breach("hooks", name, what)


def _check_config(where: str, path: Path, hooks_dir: Path, report: Report, repair: bool) -> None:
    """The settings protected history relies on, in the repository's own config file (git is
    also given them on every command line, but a hand-run git reads only the file)."""
    config = pygit2.Config(str(path / "config"))
    wanted = {**PROTECTED_CONFIG, "core.hooksPath": str(hooks_dir)}
    for key, value in wanted.items():
        try:
            current = config[key]
        except KeyError:
            current = None
        if current is not None and current.lower() == value.lower():
            continue
        if repair:
            config[key] = value
            report.repaired.append(f"{where} config {key} = {value}")
        else:
            report.breach(where, f"config {key}", f"is {current!r}, should be {value!r}")


def _check_ledger(runtime: Runtime, repo: reconcile.RepoRef, path: Path, report: Report,
                  repair: bool) -> None:
    """The ledger against the refs on disk (the reconciler's comparison) and against every
    ref's reflog (gitserver.pipelines.reflog_audit). A repository whose check fails is one
    breach line, not the end of the check."""
    try:
        result = reconcile.reconcile_repo(runtime.sessions, repo, path, repair=repair, force=True,
                                          intent_grace=runtime.config.receive_finish_timeout,
                                          push_log=PushLog(runtime.config) if repair else None)
        report.refs += result.refs_read
        for diff in result.differences:
            if repair:
                report.repaired.append(f"{diff.repo} {diff.ref}: recorded {diff.value} as a recovered push")
            else:
                report.breach(diff.repo, diff.ref, diff.what())
        _audit_reflogs(runtime, repo, path, report, repair)
    except Exception as exc:  # one line names it; the log has the traceback
        log.exception("checking the ledger of %s failed", repo.full_name)
        report.breach(repo.full_name, "ledger", f"could not be checked ({type(exc).__name__}: {exc})"[:300])


def _audit_reflogs(runtime: Runtime, repo: reconcile.RepoRef, path: Path, report: Report,
                   repair: bool) -> None:
    on_disk = refstate.ledger_refs(refstate.read_refs(path))
    with transaction(runtime.sessions) as session:
        found = reflog_audit.audit(session, repo, path, on_disk)
        if repair and found.unrecorded:
            reconcile.record_unexplained(session, repo, found.unrecorded)
    for diff in found.unrecorded:
        if repair:
            report.repaired.append(f"{diff.repo} {diff.ref}: recorded {diff.value} from the reflog "
                                   "as a recovered push")
        else:
            report.breach(diff.repo, diff.ref, f"{diff.value} in the reflog is not in the ledger "
                                               "(no push recorded it)")
    for ref, what in found.never_landed:
        report.breach(repo.full_name, ref, what)


def _check_history(runtime: Runtime, repo: reconcile.RepoRef, path: Path, report: Report) -> None:
    """What ``gitserver verify`` checks from outside (gitserver.provenance.audit), here against
    the refs on disk and the server's own key history. ``--repair`` never rewrites the log: a
    breach it shows stays in it for every verifier to see."""
    try:
        trusted = trust.from_history(keys.read_history(runtime.config.signing_dir))
        breaches, _reading = audit.audit(pygit2.Repository(str(path)), trusted, refstate.read_refs(path))
    except Exception as exc:  # one line names it; the log has the traceback
        log.exception("checking the reference log of %s failed", repo.full_name)
        report.breach(repo.full_name, "refs/gitserver/log", f"could not be checked ({type(exc).__name__})")
        return
    for ref, what in breaches:
        report.breach(repo.full_name, ref, what)
        report.history.append(report.breaches[-1])


def _check_archives(runtime: Runtime, repo: reconcile.RepoRef, path: Path, report: Report) -> None:
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(models.Archive.tag, models.Archive.commit_id, models.Archive.tree_id)
                               .where(models.Archive.repo_id == repo.id)
                               .order_by(models.Archive.id)).all()
    git = pygit2.Repository(str(path))
    for tag, commit_id, tree_id in rows:
        report.archives += 1
        for what in archive_problems(git, tag, commit_id, tree_id):
            report.breach(repo.full_name, refs.TAGS + tag, what)


def archive_problems(git: pygit2.Repository, tag: str, commit_id: str, tree_id: str) -> list[str]:
    """What is wrong with one recorded archive (empty when nothing)."""
    ref = git.references.get(refs.TAGS + tag)
    if ref is None:
        return ["archive tag is missing"]
    commit = git_archive.peel_commit(git, str(ref.target))
    if commit is None:
        return ["archive tag names no commit"]
    problems = []
    if str(commit.id) != commit_id:
        problems.append(f"archive tag names {commit.id}, recorded {commit_id}")
    if str(commit.tree_id) != tree_id:
        problems.append(f"archive commit's tree is {commit.tree_id}, recorded {tree_id}")
    if tag == git_archive.tag_name(commit_id):  # a push archive: the orphan commit
        problems += _orphan_problems(commit)
        branch = git.references.get(refs.HEADS + git_archive.branch_name(commit_id))
        if branch is None or str(branch.target) != commit_id:
            problems.append(f"branch {git_archive.branch_name(commit_id)} does not point at the archive commit")
    return problems


def _orphan_problems(commit: pygit2.Commit) -> list[str]:
    expected = git_archive.archive_signature()
    checks: list[tuple[bool, str]] = [
        (not commit.parents, "archive commit has parents"),
        (commit.message == git_archive.ARCHIVE_MESSAGE, "archive commit message differs"),
    ]
    for role, sig in (("author", commit.author), ("committer", commit.committer)):
        same = (sig.name, sig.email, sig.time, sig.offset) == (expected.name, expected.email,
                                                               expected.time, expected.offset)
        checks.append((same, f"archive commit {role} is not the fixed identity and date"))
    return [what for ok, what in checks if not ok]

