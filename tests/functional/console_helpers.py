"""Helpers of the web console's functional tests: sign-in links through the real
``ssh git@host login``, signed-in HTTP sessions, and Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.functional.conftest import GitServer, User

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
COOKIE = "gitserver_console"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
# axe-core from npm, where ./dev test installs it (pinned there).
AXE = Path(__file__).resolve().parents[2] / ".cache" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_URL = re.compile(r"^(https?://\S+/ui/-/login/\S+)$", re.MULTILINE)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def login_url(server: GitServer, user: User) -> str:
    """The link ``ssh git@host login`` prints (on its last line)."""
    result = server.ssh(user, "login")
    assert result.returncode == 0, result.stderr
    found = _URL.findall(result.stdout)
    assert found and result.stdout.strip().endswith(found[-1]), result.stdout
    return found[-1]


def signed_in(server: GitServer, user: User) -> requests.Session:
    """A requests session holding a console cookie for ``user``."""
    http = requests.Session()
    response = http.get(login_url(server, user), allow_redirects=False, timeout=30)
    assert response.status_code == 303, response.text
    assert COOKIE in http.cookies
    return http


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def screenshot(page: Any, name: str) -> None:
    """Save a PNG for docs/console.md when GITSERVER_SCREENSHOTS=1 (else nothing: a test run
    does not rewrite the docs)."""
    if os.environ.get("GITSERVER_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (never a browser Playwright downloads)."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.skip(f"{CHROMIUM} is not installed (./dev test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Tab:
    """One fresh browser context (its own cookies) and page, recording console messages,
    page errors and dialogs: anything a hostile page ran would show up in one of them."""

    def __init__(self, browser: Any, **options: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 900}, **options)
        self.page = self.context.new_page()
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda msg: self.messages.append(f"{msg.type}: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def goto(self, url: str, status: int = 200) -> Any:
        response = self.page.goto(url)
        assert response is not None and response.status == status, (url, response and response.status)
        return response

    def close(self) -> None:
        self.context.close()


def axe_violations(page: Any) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations of the page, one line each (rule: targets). The
    page's context must bypass the CSP: the console's own CSP refuses injected scripts."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async tags => (await axe.run(document, {runOnly: tags})).violations"
                          ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))",
                          AXE_TAGS)
    return list(found)
