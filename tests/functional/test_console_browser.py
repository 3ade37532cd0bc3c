"""The web console in a real Chromium (Debian's, driven by Playwright), against the real
``gitserver serve`` on SQLite and PostgreSQL: signing in through ``ssh … login``, browsing a
pushed repository, following a pipeline's live log to its end, an admin adding a key through
the form, and a hostile repository whose names, messages, README and SVG run nothing (checked
in the browser's DOM, its console, page errors and dialogs). Skipped, with the reason, only
where Chromium or Playwright is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gitserver.db import models
from tests.functional.conftest import GitServer, User, make_repo
from tests.functional.console_helpers import AXE, Tab, axe_violations, browser, login_url, screenshot
from tests.functional.test_pipelines import push, wait_pipeline

__all__ = ["browser"]  # the fixture, imported so pytest finds it here

HOSTILE_NAME = '"><img src=x onerror="window.pwned=1">.txt'
HOSTILE_MESSAGE = "<script>window.pwned=1</script> and <img src=x onerror=window.pwned=2>"
HOSTILE_README = """# Hostile <script>window.pwned=3</script>

<img src=x onerror="window.pwned=4">

[click](javascript:window.pwned=5) [data](data:text/html,<script>window.pwned=6</script>)
[vb](vbscript:msgbox) [tab](java\tscript:window.pwned=7) [fine](https://example.org/)
"""
EVIL_SVG = '<svg xmlns="http://www.w3.org/2000/svg" onload="window.pwned=8"><script>window.pwned=9</script></svg>\n'


def _sign_in(server: GitServer, browser: Any, user: User, **options: Any) -> Tab:
    tab = Tab(browser, **options)
    tab.goto(login_url(server, user))
    assert tab.page.url.endswith(f"/ui/{user.tenant}")
    assert f"Signed in as {user.tenant}/{user.name}" in tab.page.inner_text("header")
    return tab


def _pushed(server: GitServer, git_env: dict[str, str], tmp_path: Path, files: dict[str, str | bytes],
            message: str = "initial", builds: bool = False) -> tuple[str, str, User, int]:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, builds=builds)
    work = make_repo(tmp_path / "w", git_env, files, message=message)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    return tenant, repo, user, push(server, user, work, "main")


def test_sign_in_through_ssh_login_works_once(server: GitServer, browser: Any) -> None:
    user = server.new_user(server.new_tenant())
    url = login_url(server, user)
    tab = Tab(browser)
    tab.goto(url)
    assert "Signed in as" in tab.page.inner_text("header")
    cookie = next(c for c in tab.context.cookies() if c["name"] == "gitserver_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert tab.page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    screenshot(tab.page, "repositories")
    tab.close()
    other = Tab(browser)
    other.goto(url, status=403)
    assert "not valid" in other.page.inner_text("main")
    assert not other.context.cookies()
    other.close()


def test_browsing_a_pushed_repository(server: GitServer, git_env: dict[str, str], tmp_path: Path,
                                      browser: Any) -> None:
    files: dict[str, str | bytes] = {
        "README.md": "# Widgets\n\nA *small* library. See [the code](src/widgets.py).\n",
        "src/widgets.py": "def area(w: int, h: int) -> int:\n    return w * h\n"}
    tenant, repo, user, pid = _pushed(server, git_env, tmp_path, files, message="Add widgets")
    pipeline = wait_pipeline(server, pid)
    tab = _sign_in(server, browser, user)
    base = f"{server.http_url}/ui/{tenant}/{repo}"
    tab.goto(base)
    assert tab.page.inner_text(".readme h1") == "Widgets"
    assert server.repo_url(tenant, repo) in tab.page.inner_text("dl.clone")
    screenshot(tab.page, "repository")
    tab.page.click("nav.repo >> text=Files")
    tab.page.click("a.dir >> text=src/")
    tab.page.click("text=widgets.py")
    # count() and inner_text("main") do not wait for the next page (every page has a main):
    # wait for what the new page shows, so a loaded machine cannot read the old one.
    tab.page.locator(".highlight .k", has_text="def").first.wait_for()
    screenshot(tab.page, "file")
    tab.page.click("nav.repo >> text=Commits")
    tab.page.click("ol.commits a")
    tab.page.locator("main", has_text="+def area").wait_for()
    tab.page.click("nav.repo >> text=Branches and tags")
    row = tab.page.locator("tr", has_text=pipeline.archive_tag)
    assert "verified" in row.inner_text()  # signed by the server, checked against its published keys
    tab.page.click("nav.repo >> text=Pushes")
    tab.page.locator("main", has_text=user.fingerprint).wait_for()
    screenshot(tab.page, "pushes")
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)
    tab.close()


def test_following_a_pipeline_log_to_its_end(server: GitServer, git_env: dict[str, str], tmp_path: Path,
                                             browser: Any) -> None:
    toml = ('[[steps]]\nname = "count"\n'
            'command = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done; echo the-end"\n')
    tenant, repo, user, pid = _pushed(server, git_env, tmp_path, {".gitserver/pipeline.toml": toml},
                                      builds=True)
    tab = _sign_in(server, browser, user)
    tab.goto(f"{server.http_url}/ui/{tenant}/{repo}/pipelines/{pid}")
    assert tab.page.get_attribute("#log", "data-final") == "no"  # opened while it runs
    tab.page.wait_for_selector("#log[data-done=yes]", timeout=90_000)
    log = tab.page.inner_text("#log")
    # The page had only part of it when it opened; the script appended the rest as it came.
    assert "line-1\nline-2\nline-3\nline-4\nline-5\nline-6\nthe-end\n" in log
    assert log.rstrip().endswith("*** pipeline succeeded")
    assert tab.page.inner_text("#status") == "succeeded"
    # Once it ended the page showed itself anew: final steps, no cancel button.
    assert "running" not in tab.page.inner_text("ol.steps") and tab.page.locator("text=Cancel").count() == 0
    assert wait_pipeline(server, pid).status == "succeeded"
    screenshot(tab.page, "pipeline")
    tab.close()


def test_an_admin_adds_a_key_through_the_form(server: GitServer, browser: Any) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    key_path, public = server.new_key("formkey")
    tab = _sign_in(server, browser, admin)
    tab.page.click("header >> text=Admin")
    tab.page.click(f"text={member.name}")
    tab.page.fill("#add-key-key", public)
    tab.page.fill("#add-key-title", "laptop <b>bold</b>")
    tab.page.click("#add-key button[type=submit]")
    assert "laptop <b>bold</b>" in tab.page.inner_text("main")  # shown escaped, as typed
    screenshot(tab.page, "admin-user")
    with server.db() as session:
        titles = set(session.scalars(select(models.PublicKey.title)
                                     .where(models.PublicKey.user_id == member.id)))
    assert "laptop <b>bold</b>" in titles
    assert server.ssh(key_path, "info").returncode == 0  # the new key logs the member in
    tab.close()


def test_a_hostile_repository_runs_nothing(server: GitServer, git_env: dict[str, str], tmp_path: Path,
                                           browser: Any) -> None:
    files: dict[str, str | bytes] = {"README.md": HOSTILE_README, HOSTILE_NAME: "<script>window.pwned=10</script>\n",
                                     "evil.svg": EVIL_SVG, "notes.md": HOSTILE_README}
    tenant, repo, user, pid = _pushed(server, git_env, tmp_path, files, message=HOSTILE_MESSAGE)
    pipeline = wait_pipeline(server, pid)
    tab = _sign_in(server, browser, user)
    base = f"{server.http_url}/ui/{tenant}/{repo}"
    pages = [base, base + "/tree", base + "/commits", f"{base}/commit/{pipeline.commit}",
             base + "/blob?rev=main&path=notes.md", base + "/blob?rev=main&path=evil.svg",
             base + "/blob?rev=main&path=" + HOSTILE_NAME.replace('"', "%22").replace("#", "%23"),
             base + "/pushes", base + "/pipelines"]
    for url in pages:
        tab.goto(url)
        _assert_inert(tab, url)
    tab.goto(base + "/commits")
    assert HOSTILE_MESSAGE.split(" and ")[0] in tab.page.inner_text("ol.commits")  # shown, as text
    tab.goto(base + "/tree")
    assert HOSTILE_NAME in tab.page.inner_text("table.tree")
    tab.goto(base)
    links = tab.page.eval_on_selector_all(".markdown a", "els => els.map(e => e.getAttribute('href'))")
    assert links == ["https://example.org/"], links
    screenshot(tab.page, "hostile")
    # The SVG's raw URL is a download in the browser too, never a rendered document.
    with tab.page.expect_download() as download:
        tab.page.evaluate("url => { const a = document.createElement('a'); a.href = url; a.click(); }",
                          base + "/raw?rev=main&path=evil.svg")
    assert download.value.suggested_filename == "evil.svg"
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)
    tab.close()


def _assert_inert(tab: Tab, url: str) -> None:
    page = tab.page
    assert page.evaluate("typeof window.pwned") == "undefined", url
    scripts = page.eval_on_selector_all("script", "els => els.map(e => e.getAttribute('src'))")
    assert scripts == ["/ui/-/static/console.js"], (url, scripts)
    handlers = page.evaluate("""() => [...document.querySelectorAll('*')].flatMap(
        el => [...el.attributes].filter(a => a.name.startsWith('on')).map(a => el.tagName + ' ' + a.name))""")
    assert handlers == [], (url, handlers)
    assert page.locator("main img, main svg, main iframe, main object, main embed").count() == 0, url
    assert not [m for m in tab.messages if "pwned" in m], (url, tab.messages)


def test_pages_fit_a_phone(server: GitServer, browser: Any) -> None:
    """At 375 px wide nothing scrolls sideways (tables scroll inside themselves)."""
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    server.new_repo(tenant)
    tab = _sign_in(server, browser, user)
    tab.page.set_viewport_size({"width": 375, "height": 800})
    for path in (f"/ui/{tenant}", f"/ui/-/admin/{tenant}", f"/ui/-/admin/{tenant}/users/{user.name}"):
        tab.goto(server.http_url + path)
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    tab.close()


def test_axe_finds_no_accessibility_violations(server: GitServer, git_env: dict[str, str],
                                               tmp_path: Path, browser: Any) -> None:
    """axe-core's WCAG 2.1 A and AA rules on every kind of page, signed in as an admin."""
    if not AXE.is_file():
        pytest.skip(f"axe-core is not installed at {AXE} (./dev test installs it with npm)")
    toml = '[[steps]]\nname = "hello"\ncommand = "echo hello"\n'
    files: dict[str, str | bytes] = {"README.md": "# Title\n\nText and [a link](https://example.org/).\n",
                                     "src/a.py": "x = 1\n", ".gitserver/pipeline.toml": toml}
    tenant, repo, user, pid = _pushed(server, git_env, tmp_path, files, builds=True)
    pipeline = wait_pipeline(server, pid)
    tab = _sign_in(server, browser, user, bypass_csp=True)  # only so axe's script can be injected
    base = f"{server.http_url}/ui/{tenant}/{repo}"
    for url in (f"{server.http_url}/ui/{tenant}", base, base + "/tree", base + "/blob?rev=main&path=src/a.py",
                base + "/commits", f"{base}/commit/{pipeline.commit}", base + "/refs", base + "/pushes",
                base + "/pipelines", f"{base}/pipelines/{pid}", base + "/webhooks", base + "/access",
                f"{server.http_url}/ui/-/admin/{tenant}", f"{server.http_url}/ui/-/admin/{tenant}/users/{user.name}",
                f"{server.http_url}/ui/{tenant}/nosuchrepo"):
        tab.page.goto(url)
        assert axe_violations(tab.page) == [], url
    # The engine is live: a page with an unlabelled field and an image without alt fails.
    tab.page.set_content('<html lang="en"><title>t</title><main><img src="x.png"><input></main></html>')
    assert {v.split(":")[0] for v in axe_violations(tab.page)} >= {"image-alt", "label"}
    tab.close()


HOSTILE_RULES = ('[{"pattern": "refs/heads/<script>window.pwned=10</script>",'
                 ' "forbidden_paths": ["\\"><img src=x onerror=window.pwned=11>"]}]')


def test_an_admin_replaces_the_rules_in_the_browser(server: GitServer, browser: Any) -> None:
    """The rules form typed into and submitted by Chromium; the hostile list it stores is
    shown as text and runs nothing, even with the page's CSP bypassed (escaping alone holds);
    a bad list is answered on the page, the old id kept. axe checks the page where installed."""
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    tab = _sign_in(server, browser, user, bypass_csp=True)
    tab.goto(f"{server.http_url}/ui/{tenant}/{repo}")
    tab.page.get_by_role("link", name="Rules", exact=True).click()
    assert tab.page.inner_text("#rule-set-id") == "none"
    tab.page.fill("#rules-json", HOSTILE_RULES)
    tab.page.get_by_role("button", name="Replace the rules").click()
    tab.page.wait_for_url(f"**/ui/{tenant}/{repo}/rules")
    held = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/rules").json()
    assert tab.page.inner_text("#rule-set-id") == held["id"] and held["id"].startswith("rs-")
    assert "refs/heads/<script>window.pwned=10</script>" in tab.page.inner_text("main")
    _assert_inert(tab, "rules")
    if AXE.is_file():
        assert axe_violations(tab.page) == []
    screenshot(tab.page, "rules")
    tab.page.fill("#rules-json", '[{"pattern": "refs/heads/x", "push": {"users": ["nobody"]}}]')
    tab.page.get_by_role("button", name="Replace the rules").click()
    assert "rules.0.push.users.0" in tab.page.inner_text("#rules-error")
    assert tab.page.inner_text("#rule-set-id") == held["id"]
    assert not tab.errors and not tab.dialogs, (tab.errors, tab.dialogs)
    tab.close()
