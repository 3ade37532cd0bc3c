"""The console's pure parts and its sign-in records: Markdown that can run nothing, revisions
as an allow-list, bounded diffs, the raw-file rule, and one-time links on both databases."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pygit2
import pytest
from sqlalchemy.exc import OperationalError

from gitserver.console import gitview, markdown, repo_pages, security
from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.identity import oidc_login, weblogin
from gitserver.policy.errors import NotFound
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo


@pytest.mark.parametrize(("source", "absent"), [
    ("<script>alert(1)</script>", "<script"),
    ('<img src=x onerror="alert(1)">', "<img"),
    ("[a](javascript:alert(1))", "href"),
    ("[a](JavaScript:alert(1))", "href"),
    ("[a](java\tscript:alert(1))", "href"),
    ("[a](data:text/html,hi)", "href"),
    ("![a](data:image/png;base64,AAAA)", "<img"),
    ("[a](vbscript:msgbox)", "href"),
    ("[a]( javascript:alert(1))", "href"),
])
def test_markdown_runs_nothing(source: str, absent: str) -> None:
    assert absent not in markdown.render(source)


def test_markdown_keeps_ordinary_links_and_escapes_text() -> None:
    html = markdown.render("# T <b>\n\n[x](https://example.org/a?b=1&c=2) [y](notes/a.md)")
    assert "<h1>T &lt;b&gt;</h1>" in html
    assert 'href="https://example.org/a?b=1&amp;c=2"' in html and 'href="notes/a.md"' in html


def test_the_csp_allows_no_inline_script_and_no_framing() -> None:
    assert "script-src 'self'" in security.CSP and "frame-ancestors 'none'" in security.CSP
    assert "unsafe" not in security.CSP and "unsafe" not in security.RAW_CSP
    assert security.is_console("/ui") and security.is_console("/ui/x") and not security.is_console("/uix")
    assert security.cookie_secure("https://git.example.org") and not security.cookie_secure("http://h")


def _repo(tmp_path: Path, files: int = 3) -> tuple[pygit2.Repository, pygit2.Oid]:
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    parents: list[pygit2.Oid] = []
    for i in range(files):
        sig = pygit2.Signature("A", "a@example.org", 1_700_000_000 + i, 0)
        builder = repo.TreeBuilder()
        builder.insert("f.txt", repo.create_blob(f"{i}\n".encode()), pygit2.enums.FileMode.BLOB)
        head = repo.create_commit("refs/heads/main", sig, sig, f"commit {i}", builder.write(), parents)
        parents = [head]
    return repo, parents[0]


@pytest.mark.parametrize("rev", [":/commit", "main@{0}", "main~1", "HEAD^", "../main", "", "zzzz"])
def test_revisions_are_an_allow_list(tmp_path: Path, rev: str) -> None:
    repo, _head = _repo(tmp_path)
    with pytest.raises(NotFound):
        gitview.resolve(repo, rev)


def test_revisions_by_branch_and_id_and_paged_log(tmp_path: Path) -> None:
    repo, head = _repo(tmp_path, files=5)
    assert gitview.resolve(repo, "main").id == head == gitview.resolve(repo, str(head)[:7]).id
    page, next_from = gitview.log(repo, gitview.resolve(repo, "main"), limit=2)
    assert [c.message for c in page] == ["commit 4", "commit 3"] and next_from is not None
    page, next_from = gitview.log(repo, gitview.resolve(repo, next_from), limit=10)
    assert [c.message for c in page] == ["commit 2", "commit 1", "commit 0"] and next_from is None
    with pytest.raises(NotFound):
        gitview.lookup(gitview.resolve(repo, "main"), "../f.txt")
    with pytest.raises(NotFound):  # libgit2 would stop at the NUL and find f.txt
        gitview.lookup(gitview.resolve(repo, "main"), "f.txt\0.html")


@pytest.mark.parametrize(("name", "shown"), [('a"b.svg', "a_b.svg"), ("a\\b.svg", "a_b.svg"),
                                             ("a\r\nX: y.svg", "a__X: y.svg"), ("", "file"), ("ü.svg", "ü.svg")])
def test_a_download_name_cannot_break_its_header(name: str, shown: str) -> None:
    assert repo_pages.download_name(name) == shown


def test_large_diffs_are_cut_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = pygit2.init_repository(str(tmp_path / "d.git"), bare=True)
    sig = pygit2.Signature("A", "a@example.org", 0, 0)
    builder = repo.TreeBuilder()
    for i in range(20):
        builder.insert(f"f{i:02}.txt", repo.create_blob(b"x\n" * 100), pygit2.enums.FileMode.BLOB)
    commit = repo[repo.create_commit("refs/heads/main", sig, sig, "many", builder.write(), [])]
    monkeypatch.setattr(gitview, "MAX_DIFF_FILES", 5)
    cut = gitview.diff(repo, commit)
    assert cut.truncated and len(cut.files) == 5 and cut.total_files == 20
    monkeypatch.setattr(gitview, "MAX_DIFF_FILES", 100)
    whole = gitview.diff(repo, commit)
    assert not whole.truncated and len(whole.files) == 20


def _user(session: object, runtime: Runtime) -> models.User:
    repo = add_repo(session)  # type: ignore[arg-type]
    user = models.User(tenant_id=repo.tenant_id, name="ann")
    session.add(user)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return user


def test_a_link_signs_in_once_and_only_within_five_minutes(runtime: Runtime) -> None:
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    with transaction(runtime.sessions) as session:
        user = _user(session, runtime)
        fresh = weblogin.create_link(session, user, now)
        late = weblogin.create_link(session, user, now)
    with transaction(runtime.sessions) as session:
        assert weblogin.redeem(session, fresh, now + dt.timedelta(minutes=4)) is not None
        assert weblogin.redeem(session, fresh, now + dt.timedelta(minutes=4)) is None
        assert weblogin.redeem(session, late, now + weblogin.LINK_LIFETIME) is None
        assert weblogin.redeem(session, "x" * weblogin.SECRET_LENGTH, now) is None
        assert weblogin.redeem(session, "\0", now) is None


def test_two_browsers_racing_for_one_link_one_wins(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        secret = weblogin.create_link(session, _user(session, runtime))
    winners: list[bool] = []
    barrier = threading.Barrier(4)

    def redeem() -> None:
        barrier.wait()
        try:
            with transaction(runtime.sessions) as session:
                winners.append(weblogin.redeem(session, secret) is not None)
        except OperationalError:  # a SQLite writer that lost the lock: it did not sign in either
            winners.append(False)

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners.count(True) == 1


def test_sessions_end_expire_and_die_with_a_disabled_user(runtime: Runtime) -> None:
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    with transaction(runtime.sessions) as session:
        user = _user(session, runtime)
        one, two = weblogin.open_session(session, user, now), weblogin.open_session(session, user, now)
    with transaction(runtime.sessions) as session:
        row = weblogin.find_session(session, one.secret, now)
        assert row is not None and weblogin.csrf_matches(row, row.csrf_token)
        assert not weblogin.csrf_matches(row, "") and not weblogin.csrf_matches(row, None)
        assert not weblogin.csrf_matches(row, two.row.csrf_token)
        assert weblogin.find_session(session, one.secret, now + weblogin.SESSION_LIFETIME) is None
        weblogin.end_session(row, now)
    with transaction(runtime.sessions) as session:
        assert weblogin.find_session(session, one.secret, now) is None
        assert weblogin.find_session(session, two.secret, now) is not None
        session.get(models.User, two.row.user_id).disabled = True  # type: ignore[union-attr]
    with transaction(runtime.sessions) as session:
        assert weblogin.find_session(session, two.secret, now) is None


def test_pkce_challenge_is_rfc_7636s_s256() -> None:
    # RFC 7636, appendix B.
    assert oidc_login.challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_callback_whose_state_is_not_this_browsers_is_refused() -> None:
    sign_on = oidc_login.ConsoleSignOn("https://id.example.org", "c", "", "preferred_username",
                                       fetch=lambda url, timeout: {}, post=lambda url, form, timeout: {})
    for cookie, state in (("a.b.c", "x"), ("", "a"), ("a.b", "a"), ("a.b.c", "")):
        with pytest.raises(oidc_login.Forbidden):
            sign_on.complete(cookie, state, "code", "https://git.example.org/ui/-/oidc/callback")
