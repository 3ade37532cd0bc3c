"""The pages of a repository's content: summary (README, clone URLs, branches, tags), tree,
file, raw, commits, one commit with its diff, and the branches and tags with the signature
state of archive tags. Every one starts with :func:`granted` (the one read rule)."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Any

import falcon
import pygit2

from gitserver import shapes
from gitserver.console import gitview, highlight, markdown, security, signature
from gitserver.console.web import Page, View
from gitserver.db import models
from gitserver.policy import access
from gitserver.policy.errors import NotFound

README_NAMES = ("readme.md", "readme.markdown", "readme", "readme.txt", "readme.rst")
MARKDOWN_SUFFIXES = (".md", ".markdown")
MAX_README_BYTES = markdown.MAX_MARKDOWN_BYTES
MAX_SHOWN_BYTES = 1024 * 1024
TEXT_PLAIN = "text/plain; charset=utf-8"
OCTET_STREAM = "application/octet-stream"
# A raw text file is shown as text/plain, except these, which a browser could run or render as
# a document if it ever ignored nosniff: they are downloads.
ATTACHMENT_SUFFIXES = (".svg", ".svgz", ".html", ".htm", ".xhtml", ".xml", ".js", ".mjs", ".pdf")
_UNSAFE_IN_HEADER = re.compile(r'["\\\x00-\x1f\x7f]')


@dataclasses.dataclass
class Opened:
    """A readable repository: its row, the permission, and the pygit2 handle."""

    row: models.Repository
    permission: str
    git: pygit2.Repository

    @property
    def base(self) -> str:
        return f"{security.CONSOLE_PREFIX}/{self.row.tenant.name}/{self.row.name}"


def granted(view: View, tenant: str, repo: str, need: str = access.READ) -> Opened:
    """The repository when the viewer may ``need`` it; :class:`~access.RepoHidden` (404, as a
    missing one) when it may not read it."""
    grant = access.authorise(view.session, view.principal, tenant, repo, need)
    path = view.ctx.runtime.store.path(grant.repo.tenant.name, grant.repo.name)
    return Opened(grant.repo, grant.permission, gitview.open_repo(path))


def rev_commit(opened: Opened, rev: str) -> tuple[str, pygit2.Commit | None]:
    """The revision a page asked for (default: the default branch) and its commit; None for
    an empty repository."""
    rev = rev or gitview.default_rev(opened.git) or ""
    if not rev:
        return "", None
    return rev, gitview.resolve(opened.git, rev)


def page_values(view: View, opened: Opened, **values: Any) -> dict[str, Any]:
    return {"repo": opened.row, "base": opened.base, "permission": opened.permission, **values}


def _readme(commit: pygit2.Commit) -> tuple[str, Any] | None:
    for obj in commit.tree:
        if isinstance(obj, pygit2.Blob) and (obj.name or "").lower() in README_NAMES:
            text = gitview.decode_text(obj.data[:MAX_README_BYTES])
            if text is None:
                return None
            name = obj.name or ""
            if name.lower().endswith(MARKDOWN_SUFFIXES):
                return name, markdown.render(text)
            return name, highlight.render("README.txt", text)
    return None


class Summary(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        rev, commit = rev_commit(opened, view.param("rev"))
        repo_json = shapes.repo_json(opened.row, view.ctx.config)
        view.render("repo.html", **page_values(
            view, opened, rev=rev, commit=commit, readme=_readme(commit) if commit else None,
            clone={"ssh": repo_json["ssh_url"], "http": repo_json["http_url"],
                   "bundle": repo_json.get("bundle_url")},
            branches=gitview.branches(opened.git), tags=gitview.tags(opened.git)[:20]))


class Tree(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        rev, commit = rev_commit(opened, view.param("rev"))
        if commit is None:
            raise NotFound("this repository is empty: nothing has been pushed yet")
        path = view.param("path").strip("/")
        obj = gitview.lookup(commit, path)
        if not isinstance(obj, pygit2.Tree):
            view.redirect(f"{opened.base}/blob?{falcon.to_query_str({'rev': rev, 'path': path})[1:]}")
            return
        rows, cut = gitview.entries(obj, path)
        view.render("tree.html", **page_values(view, opened, rev=rev, commit=commit, path=path,
                                               crumbs=_crumbs(path), entries=rows, cut=cut))


def _crumbs(path: str) -> list[tuple[str, str]]:
    """Each directory of ``path`` with the path that leads to it."""
    parts = [p for p in path.split("/") if p]
    return [(part, "/".join(parts[:i + 1])) for i, part in enumerate(parts)]


def _blob(view: View, opened: Opened) -> tuple[str, pygit2.Commit, str, pygit2.Blob]:
    rev, commit = rev_commit(opened, view.param("rev"))
    if commit is None:
        raise NotFound("this repository is empty: nothing has been pushed yet")
    path = view.param("path").strip("/")
    obj = gitview.lookup(commit, path)
    if not isinstance(obj, pygit2.Blob):
        raise NotFound(f"{path[:200]!r} is not a file")
    return rev, commit, path, obj


class File(Page):
    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        rev, commit, path, blob = _blob(view, opened)
        text = gitview.decode_text(blob.data) if blob.size <= MAX_SHOWN_BYTES else None
        name = posixpath.basename(path)
        body = None
        if text is not None:
            body = markdown.render(text) if name.lower().endswith(MARKDOWN_SUFFIXES) and \
                view.param("plain") != "1" else highlight.render(name, text)
        view.render("file.html", **page_values(view, opened, rev=rev, commit=commit, path=path,
                                               crumbs=_crumbs(path), size=blob.size, body=body,
                                               markdown=name.lower().endswith(MARKDOWN_SUFFIXES)))


class Raw(Page):
    """The bytes of a file: ``text/plain`` for text, else (and for anything a browser could
    render as a document: HTML, SVG, XML…) a download. Never HTML from our origin."""

    def get(self, view: View, tenant: str, repo: str) -> None:
        opened = granted(view, tenant, repo)
        _rev, _commit, path, blob = _blob(view, opened)
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
        path = view.ctx.runtime.store.path(opened.row.tenant.name, opened.row.name)
        archive_tags: dict[str, bytes] = {}
        all_tags = gitview.tags(opened.git)
        for ref in all_tags:
            if ref.full.startswith(gitview.ARCHIVE_TAG_PREFIX):
                obj = opened.git.get(opened.git.references[ref.full].target)
                archive_tags[ref.name] = opened.git.odb.read(obj.id)[1] if isinstance(obj, pygit2.Tag) else b""
        states = signature.tag_signatures(path, archive_tags,
                                          signature.allowed_signers(view.ctx.config.signing_dir))
        tag_rows = [(ref, states.get(ref.name, "")) for ref in all_tags]
        view.render("refs.html", **page_values(view, opened, branches=gitview.branches(opened.git),
                                               tags=tag_rows))
