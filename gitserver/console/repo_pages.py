"""The pages of a repository's content: summary (README, clone URLs, branches, tags), tree,
file, raw, commits, one commit with its diff, and the branches and tags with the signature
state of archive tags. Every one starts with :func:`granted` (the one read rule)."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from pathlib import Path
from typing import Any

import falcon
import pygit2

from gitserver import shapes
from gitserver.console import blame, fileview, gitview, highlight, security, signature
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import NotFound

README_NAMES = ("readme.md", "readme.markdown", "readme", "readme.txt", "readme.rst")
MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_PLAIN = "text/plain; charset=utf-8"
OCTET_STREAM = "application/octet-stream"
# A raw text file is shown as text/plain, except these, which a browser could run or render as
# a document if it ever ignored nosniff: they are downloads.
ATTACHMENT_SUFFIXES = (".svg", ".svgz", ".html", ".htm", ".xhtml", ".xml", ".js", ".mjs", ".pdf")
EMPTY = "this repository is empty: nothing has been pushed yet"
_UNSAFE_IN_HEADER = re.compile(r'["\\\x00-\x1f\x7f]')


@dataclasses.dataclass
class Opened:
    """A readable repository: its row, the permission, the pygit2 handle and its directory."""

    row: models.Repository
    permission: str
    git: pygit2.Repository
    path: Path

    @property
    def base(self) -> str:
        return f"{security.CONSOLE_PREFIX}/{self.row.tenant.name}/{self.row.name}"


def granted(view: View, tenant: str, repo: str, need: str = access.READ) -> Opened:
    """The repository when the viewer may ``need`` it; :class:`~access.RepoHidden` (404, as a
    missing one) when it may not read it."""
    grant = access.authorise(view.session, view.principal, tenant, repo, need)
    path = view.ctx.runtime.store.path(grant.repo.tenant.name, grant.repo.name)
    return Opened(grant.repo, grant.permission, gitview.open_repo(path), path)


def rev_commit(opened: Opened, rev: str) -> tuple[str, pygit2.Commit | None]:
    """The revision a page asked for (default: the default branch) and its commit; None for
    an empty repository."""
    rev = rev or gitview.default_rev(opened.git) or ""
    if not rev:
        return "", None
    return rev, gitview.resolve(opened.git, rev)


def page_values(view: View, opened: Opened, **values: Any) -> dict[str, Any]:
    return {"repo": opened.row, "base": opened.base, "permission": opened.permission, **values}


def is_markdown(name: str) -> bool:
    return name.lower().endswith(MARKDOWN_SUFFIXES)


def shown_file(view: View, blob: pygit2.Blob, name: str, plain: bool = False) -> fileview.Shown | None:
    """A file as a page shows it (gitserver.console.fileview); None for a binary file."""
    text = fileview.text_of(blob.data)
    if text is None:
        return None
    if is_markdown(name) and not plain:
        return fileview.document(view.ctx.prepared, str(blob.id), name, text)
    return fileview.source(view.ctx.prepared, str(blob.id), name, text)


def _readme(view: View, commit: pygit2.Commit) -> tuple[str, fileview.Shown, bool] | None:
    """The README's name, how it is shown, and whether it is Markdown."""
    for obj in commit.tree:
        if isinstance(obj, pygit2.Blob) and (obj.name or "").lower() in README_NAMES:
            name = obj.name or ""
            shown = shown_file(view, obj, name if is_markdown(name) else "README.txt")
            return (name, shown, is_markdown(name)) if shown is not None else None
    return None


class Summary(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        rev, commit = rev_commit(opened, view.param("rev"))
        repo_json = shapes.repo_json(opened.row, view.ctx.config)
        view.render("repo.html", **page_values(
            view, opened, rev=rev, commit=commit, readme=_readme(view, commit) if commit else None,
            clone={"ssh": repo_json["ssh_url"], "http": repo_json["http_url"],
                   "bundle": repo_json.get("bundle_url")},
            branches=gitview.branches(opened.git), tags=gitview.tags(opened.git)[:20], limits=fileview))


@dataclasses.dataclass(frozen=True)
class AtPath:
    """What a page's ``?rev=`` and ``?path=`` name."""

    rev: str
    commit: pygit2.Commit
    path: str
    obj: pygit2.Object


def at_path(view: View, opened: Opened) -> AtPath:
    rev, commit = rev_commit(opened, view.param("rev"))
    if commit is None:
        raise NotFound(EMPTY)
    path = view.param("path").strip("/")
    return AtPath(rev, commit, path, gitview.lookup(commit, path))


class Tree(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        at = at_path(view, opened)
        if not isinstance(at.obj, pygit2.Tree):
            view.redirect(f"{opened.base}/blob?{falcon.to_query_str({'rev': at.rev, 'path': at.path})[1:]}")
            return
        rows, cut = gitview.entries(at.obj, at.path)
        view.render("tree.html", **page_values(view, opened, rev=at.rev, commit=at.commit, path=at.path,
                                               crumbs=crumbs(at.path), entries=rows, cut=cut))


def crumbs(path: str) -> list[tuple[str, str]]:
    """Each directory of ``path`` with the path that leads to it."""
    parts = [p for p in path.split("/") if p]
    return [(part, "/".join(parts[:i + 1])) for i, part in enumerate(parts)]


def blob_at(view: View, opened: Opened) -> tuple[AtPath, pygit2.Blob]:
    at = at_path(view, opened)
    if not isinstance(at.obj, pygit2.Blob):
        raise NotFound(f"{at.path[:200]!r} is not a file")
    return at, at.obj


def file_values(view: View, opened: Opened, at: AtPath, blob: pygit2.Blob, **values: Any) -> dict[str, Any]:
    """What the file and blame pages share: the path, its links, the file's size."""
    return page_values(view, opened, rev=at.rev, commit=at.commit, path=at.path, crumbs=crumbs(at.path),
                       size=blob.size, markdown=is_markdown(at.path), **values)


class File(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        at, blob = blob_at(view, opened)
        plain = view.param("plain") == "1"
        shown = shown_file(view, blob, posixpath.basename(at.path), plain=plain)
        view.render("file.html", **file_values(view, opened, at, blob, shown=shown, limits=fileview,
                                               document=is_markdown(at.path) and not plain))


class Blame(Page):
    """Who last changed each line (gitserver.console.blame: bounded in commits, size and the
    time the page waits)."""

    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        at, blob = blob_at(view, opened)
        text = fileview.text_of(blob.data, blame.MAX_BYTES + 1, blame.MAX_LINES + 1)
        found: blame.Blame | None = None
        too_large = text is not None and (text.cut or blame.too_large(text.size, highlight.line_count(text.text)))
        if text is not None and not too_large:
            commit_id, path = str(at.commit.id), at.path
            found = view.ctx.prepared.prepare(f"blame:{commit_id}:{path}",
                                              lambda: blame.blame(opened.path, commit_id, path),
                                              blame.WAIT_SECONDS, cost=lambda b: b.cost)
        view.render("blame.html", **file_values(
            view, opened, at, blob, binary=text is None, too_large=too_large, limits=blame,
            blame=found, rows=blame.rows(found, text.text) if found and text else []))


class Raw(Page):
    """The bytes of a file: ``text/plain`` for text, else (and for anything a browser could
    render as a document: HTML, SVG, XML…) a download. Never HTML from our origin."""

    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        at, blob = blob_at(view, opened)
        path = at.path
        data = blob.data
        name = posixpath.basename(path)
        resp = view.resp
        resp.status = falcon.HTTP_200
        resp.set_header("Content-Security-Policy", security.RAW_CSP)
        if gitview.decode_text(data) is not None and not name.lower().endswith(ATTACHMENT_SUFFIXES):
            resp.content_type = TEXT_PLAIN
        else:
            resp.content_type = OCTET_STREAM
            resp.downloadable_as = download_name(name)
        resp.data = data


def download_name(name: str) -> str:
    """A pushed file's name fit for ``Content-Disposition``: a quote, backslash or control
    character (CR, LF) would end the filename parameter or the header itself."""
    return _UNSAFE_IN_HEADER.sub("_", name) or "file"


class Commits(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        rev, commit = rev_commit(opened, view.param("rev"))
        start = gitview.resolve(opened.git, view.param("from")) if view.param("from") else commit
        rows, next_from = gitview.log(opened.git, start) if start is not None else ([], None)
        view.render("commits.html", **page_values(view, opened, rev=rev, commits=rows, next_from=next_from,
                                                  summary=gitview.summary))


class Commit(Page):
    def get(self, view: View, tenant: str, repo: str, oid: str) -> None:
        opened = granted(view, tenant, repo)
        commit = gitview.resolve(opened.git, oid)
        view.render("commit.html", **page_values(view, opened, commit=commit,
                                                 diff=gitview.diff(opened.git, commit)))


class Refs(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        archive_tags: dict[str, bytes] = {}
        all_tags = gitview.tags(opened.git)
        for ref in all_tags:
            if ref.full.startswith(gitview.ARCHIVE_TAG_PREFIX):
                obj = opened.git.get(opened.git.references[ref.full].target)
                archive_tags[ref.name] = opened.git.odb.read(obj.id)[1] if isinstance(obj, pygit2.Tag) else b""
        states = signature.tag_signatures(opened.path, archive_tags,
                                          signature.allowed_signers(view.ctx.config.signing_dir))
        tag_rows = [(ref, states.get(ref.name, "")) for ref in all_tags]
        view.render("refs.html", **page_values(view, opened, branches=gitview.branches(opened.git),
                                               tags=tag_rows))
