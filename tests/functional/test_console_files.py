"""Files and blame in the web console, against the real ``gitserver serve`` on SQLite and
PostgreSQL, in Debian's Chromium (Playwright): the blame page (rendered, a hostile line and
commit message shown as text and run nothing, axe's checks), a file too large to show whole
(the page says so, the raw file has all of it), a file highlighted on the background thread;
and the worker deleting dead sign-in links and sessions while the live ones stay."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gitserver.console import blame, fileview
from gitserver.db import models
from gitserver.identity import weblogin
from tests.functional.conftest import GitServer, User, commit_files, make_repo
from tests.functional.console_helpers import AXE, Tab, axe_violations, browser, login_url, screenshot
from tests.functional.test_console_browser import _assert_inert
from tests.functional.test_pipelines import push

__all__ = ["browser"]  # the fixture, imported so pytest finds it here

HOSTILE_LINE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
HOSTILE_MESSAGE = "Add <script>window.pwned=3</script> the check"
STILL_WORKING = "is being"  # what a page says while the background thread works


def _repo_with_history(server: GitServer, git_env: dict[str, str], tmp_path: Path) -> tuple[str, str, User, str]:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "w", git_env, {"src/app.py": "def main():\n    return 1\n"}, message="First")
    second = commit_files(work, git_env, {"src/app.py": f"def main():\n    return 1\n# {HOSTILE_LINE}\n"},
                          message=HOSTILE_MESSAGE)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    push(server, user, work, "main")
    return tenant, repo, user, second


def _goto_done(tab: Tab, url: str, seconds: float = 30.0) -> None:
    """Open ``url``, and again until it no longer says the background thread is at work."""
    deadline = time.monotonic() + seconds
    tab.goto(url)
    while STILL_WORKING in tab.page.inner_text("main") and time.monotonic() < deadline:
        time.sleep(0.2)
        tab.goto(url)
    assert STILL_WORKING not in tab.page.inner_text("main"), url


def _sign_in(server: GitServer, browser: Any, user: User, **options: Any) -> Tab:
    tab = Tab(browser, **options)
    tab.goto(login_url(server, user))
    return tab


def test_the_blame_page_names_each_lines_commit_and_runs_nothing(server: GitServer, git_env: dict[str, str],
                                                                 tmp_path: Path, browser: Any) -> None:
    tenant, repo, user, second = _repo_with_history(server, git_env, tmp_path)
    tab = _sign_in(server, browser, user, bypass_csp=True)  # only so axe's script can be injected
    base = f"{server.http_url}/ui/{tenant}/{repo}"
    tab.goto(f"{base}/blob?rev=main&path=src/app.py")
    tab.page.get_by_role("link", name="Blame", exact=True).click()
    tab.page.wait_for_url("**/blame?**")
    _goto_done(tab, tab.page.url)
    table = tab.page.get_by_role("table", name="Who last changed each line of src/app.py at main")
    rows = table.locator("tbody tr")
    assert rows.count() == 2  # lines 1-2 from the first commit, line 3 from the second
    assert "First" in rows.nth(0).inner_text()
    last = rows.nth(1)
    assert second[:12] in last.inner_text() and HOSTILE_MESSAGE in last.inner_text()
    assert f"# {HOSTILE_LINE}" in last.locator("td").nth(4).inner_text()  # the line, as text
    assert last.locator("td").nth(3).inner_text() == "3"
    _assert_inert(tab, "blame")
    if AXE.is_file():
        assert axe_violations(tab.page) == []
    screenshot(tab.page, "blame")
    last.get_by_role("link").first.click()  # the line's commit
    assert HOSTILE_MESSAGE in tab.page.inner_text("pre.message")
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)
    tab.close()


def test_blame_of_a_binary_or_missing_file(server: GitServer, git_env: dict[str, str], tmp_path: Path,
                                           browser: Any) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "w", git_env, {"logo.bin": b"\x00\x01\x02", "big.txt": "x\n" * (blame.MAX_LINES + 1)})
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    push(server, user, work, "main")
    tab = _sign_in(server, browser, user)
    base = f"{server.http_url}/ui/{tenant}/{repo}/blame?rev=main&path="
    tab.goto(base + "logo.bin")
    assert "binary" in tab.page.inner_text("main")
    tab.goto(base + "big.txt")
    assert "larger than blame reads" in tab.page.inner_text("main")
    tab.goto(base + "nosuch.txt", status=404)
    tab.close()


def test_files_too_large_to_show_whole_say_so_and_raw_has_all(server: GitServer, git_env: dict[str, str],
                                                                tmp_path: Path, browser: Any) -> None:
    total = fileview.MAX_SHOWN_LINES + 500
    big = "".join(f"line {i} <b>\n" for i in range(1, total + 1))
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    paragraph = "A paragraph of *text* " + "words " * 14 + "\n"  # 100 bytes: the README is over the size cap
    readme = "# Big <readme>\n\n" + paragraph * (fileview.MAX_MARKDOWN_BYTES // 100)
    work = make_repo(tmp_path / "w", git_env, {"data/big.txt": big, "README.md": readme})
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    push(server, user, work, "main")
    tab = _sign_in(server, browser, user)
    base = f"{server.http_url}/ui/{tenant}/{repo}"
    tab.goto(f"{base}/blob?rev=main&path=data/big.txt")
    note = tab.page.inner_text("p.note")
    assert f"only its first {fileview.MAX_SHOWN_LINES:,} lines are shown" in note and "Raw" in note
    shown = tab.page.inner_text(".file pre")
    assert f"line {fileview.MAX_SHOWN_LINES} <b>" in shown and f"line {fileview.MAX_SHOWN_LINES + 1} " not in shown
    raw_href = tab.page.get_by_role("link", name="Raw", exact=True).get_attribute("href")
    raw = tab.context.request.get(server.http_url + raw_href)
    assert raw.status == 200 and raw.headers["content-type"].startswith("text/plain")
    assert raw.text() == big  # every line, byte for byte
    tab.goto(base)  # a README too large to render: its source, plain, with the note
    assert "without highlighting or rendering" in tab.page.inner_text(".readme p.note")
    assert "# Big <readme>" in tab.page.inner_text(".readme .file")
    tab.close()


def test_a_larger_file_is_highlighted_on_the_background_thread(server: GitServer, git_env: dict[str, str],
                                                               tmp_path: Path, browser: Any) -> None:
    """Over what is highlighted in the request: the first view may be plain (it says so), and
    a later one is highlighted."""
    source = "".join(f"def f{i}(x: int) -> str:\n    return '<i>' * x\n" for i in range(800))
    assert len(source) > fileview.HIGHLIGHT_NOW_BYTES
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "w", git_env, {"gen.py": source})
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    push(server, user, work, "main")
    tab = _sign_in(server, browser, user)
    url = f"{server.http_url}/ui/{tenant}/{repo}/blob?rev=main&path=gen.py"
    tab.goto(url)
    if STILL_WORKING in tab.page.inner_text("main"):
        assert "shown as plain text until then" in tab.page.inner_text("p.note")
        assert tab.page.locator(".file .linenos").count() == 1600  # plain, numbered
    _goto_done(tab, url)
    assert tab.page.locator(".highlight .k", has_text="def").count() == 800
    assert "<i>" in tab.page.inner_text(".file")
    tab.close()


def test_the_worker_deletes_dead_sign_in_records(server: GitServer) -> None:
    """Real worker, real database: a used link, an expired link, a signed-out and an expired
    session go within a few monitor passes; a live link and a live session stay."""
    user = server.new_user(server.new_tenant())
    now = dt.datetime.now(dt.UTC)
    with server.db() as session:
        row = session.get(models.User, user.id)
        live_link = weblogin.create_link(session, row, now)
        used_link = weblogin.create_link(session, row, now)
        weblogin.create_link(session, row, now - dt.timedelta(hours=1))
        live = weblogin.open_session(session, row, now)
        ended = weblogin.open_session(session, row, now)
        weblogin.open_session(session, row, now - dt.timedelta(days=1))
        assert weblogin.redeem(session, used_link, now) is not None
        weblogin.end_session(ended.row, now)
        live_id = live.row.id
    keep_link = weblogin.hash_secret(live_link)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with server.db() as session:
            links = set(session.scalars(select(models.ConsoleLogin.secret_hash)
                                        .where(models.ConsoleLogin.user_id == user.id)))
            sessions = set(session.scalars(select(models.ConsoleSession.id)
                                           .where(models.ConsoleSession.user_id == user.id)))
        if links == {keep_link} and sessions == {live_id}:
            break
        time.sleep(0.5)
    assert links == {keep_link} and sessions == {live_id}, (links, sessions)
    with server.db() as session:
        assert weblogin.find_session(session, live.secret) is not None

