"""The web console over plain HTTP against the real ``gitserver serve``, on SQLite and
PostgreSQL: sign-in links (once, 5 minutes), sessions and sign-out, CSRF, the security
headers, raw files, and the one read rule (another tenant's repository is a missing one).
The browser's side is in test_console_browser.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import requests
from sqlalchemy import func, select, update

from gitserver.db import models
from tests.functional.conftest import GitServer, make_repo
from tests.functional.console_helpers import COOKIE, csrf_token, login_url, signed_in
from tests.functional.test_pipelines import push, wait_pipeline


def _key_count(server: GitServer, user_id: int) -> int:
    with server.db() as session:
        return session.scalar(select(func.count()).select_from(models.PublicKey)
                              .where(models.PublicKey.user_id == user_id)) or 0


def test_login_link_signs_in_once_with_a_safe_cookie(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    url = login_url(server, user)
    assert url.startswith(server.http_url + "/ui/-/login/")
    first = requests.get(url, allow_redirects=False, timeout=30)
    assert first.status_code == 303 and first.headers["Location"].endswith(f"/ui/{tenant}")
    cookie = first.headers["Set-Cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
    page = requests.get(server.http_url + f"/ui/{tenant}", cookies=first.cookies, timeout=30)
    assert f"Signed in as {tenant}/{user.name}" in page.text
    again = requests.get(url, allow_redirects=False, timeout=30)
    assert again.status_code == 403 and "Set-Cookie" not in again.headers
    assert "not valid" in again.text


def test_an_expired_link_and_a_garbled_one_sign_nobody_in(server: GitServer) -> None:
    user = server.new_user(server.new_tenant())
    url = login_url(server, user)
    with server.db() as session:  # five minutes pass
        session.execute(update(models.ConsoleLogin).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    for link in (url, url[:-1] + ("A" if url[-1] != "A" else "B"), server.http_url + "/ui/-/login/x%00y"):
        response = requests.get(link, allow_redirects=False, timeout=30)
        assert response.status_code == 403 and "Set-Cookie" not in response.headers, link


def test_sign_out_ends_the_session_on_the_server(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    http = signed_in(server, user)
    page = http.get(server.http_url + f"/ui/{tenant}", timeout=30)
    stolen = dict(http.cookies)
    out = http.post(server.http_url + "/ui/-/logout", data={"csrf_token": csrf_token(page.text)},
                    allow_redirects=False, timeout=30)
    assert out.status_code == 303
    after = requests.get(server.http_url + f"/ui/{tenant}", cookies=stolen, timeout=30)
    assert "Signed in" not in after.text  # the old cookie opens nothing any more


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(server: GitServer) -> None:
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    http = signed_in(server, admin)
    target = server.http_url + f"/ui/-/admin/{tenant}/users/{admin.name}/keys"
    _path, public = server.new_key("csrf")
    before = _key_count(server, admin.id)
    for data in ({"key": public}, {"key": public, "csrf_token": "forged"}, {"key": public, "csrf_token": ""}):
        refused = http.post(target, data=data, allow_redirects=False, timeout=30)
        assert refused.status_code == 403 and "CSRF" in refused.text, data
    # The token of another session is not this one's either.
    other = signed_in(server, admin)
    theirs = csrf_token(other.get(server.http_url + f"/ui/-/admin/{tenant}/users/{admin.name}", timeout=30).text)
    assert http.post(target, data={"key": public, "csrf_token": theirs}, allow_redirects=False,
                     timeout=30).status_code == 403
    assert _key_count(server, admin.id) == before
    page = http.get(server.http_url + f"/ui/-/admin/{tenant}/users/{admin.name}", timeout=30)
    added = http.post(target, data={"key": public, "title": "from the form", "csrf_token": csrf_token(page.text)},
                      allow_redirects=False, timeout=30)
    assert added.status_code == 303, added.text
    assert _key_count(server, admin.id) == before + 1
    # Anonymous: no session, so no token can be valid.
    assert requests.post(target, data={"key": public, "csrf_token": theirs}, timeout=30).status_code == 403


def test_security_headers_on_every_response(server: GitServer) -> None:
    tenant = server.new_tenant()
    repo = server.new_repo(tenant, visibility="public")
    for path in ("/ui", f"/ui/{tenant}", f"/ui/{tenant}/{repo}", "/ui/nope/nope", "/ui/-/static/console.js",
                 "/ui/-/login/" + "A" * 43):
        response = requests.get(server.http_url + path, timeout=30)
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    for path in ("/api/v1/openapi.json", "/healthz", "/api/v1/tenants"):
        assert requests.get(server.http_url + path, timeout=30).headers["X-Content-Type-Options"] == "nosniff"


def test_authenticated_api_answers_are_never_cached(server: GitServer) -> None:
    """A new token's secret must not stay in a cache between the caller and the server."""
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    created = server.api("POST", f"/api/v1/tenants/{tenant}/users/{user.name}/tokens", {"name": "ci"})
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    assert "no-store" not in requests.get(server.http_url + "/api/v1/openapi.json", timeout=30).headers.get(
        "Cache-Control", "")


def test_another_tenants_repository_answers_like_a_missing_one(server: GitServer) -> None:
    mine, theirs = server.new_tenant(), server.new_tenant()
    user = server.new_user(mine, role="admin")
    hidden = server.new_repo(theirs)
    http = signed_in(server, user)
    for suffix in ("", "/tree", "/commits", "/pushes", "/pipelines", "/refs", "/rules", "/raw?path=README.md"):
        real = http.get(server.http_url + f"/ui/{theirs}/{hidden}{suffix}", timeout=30)
        missing = http.get(server.http_url + f"/ui/{theirs}/nosuchrepo{suffix}", timeout=30)
        assert real.status_code == missing.status_code == 404, suffix
        assert real.text.replace(hidden, "X") == missing.text.replace("nosuchrepo", "X"), suffix
    # Nor is the other tenant itself, while it has nothing public.
    real = http.get(server.http_url + f"/ui/{theirs}", timeout=30)
    missing = http.get(server.http_url + "/ui/nosuchtenant", timeout=30)
    assert real.status_code == missing.status_code == 404
    assert real.text.replace(theirs, "X") == missing.text.replace("nosuchtenant", "X")
    # Nor are another tenant's admin pages there.
    assert http.get(server.http_url + f"/ui/-/admin/{theirs}", timeout=30).status_code == 404
    member = signed_in(server, server.new_user(mine))
    assert member.get(server.http_url + f"/ui/-/admin/{mine}", timeout=30).status_code == 403


def test_raw_files_are_text_or_downloads_never_html(server: GitServer, git_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant, visibility="public")
    files = {"page.html": "<script>alert(1)</script>\n", "logo.svg": '<svg xmlns="http://www.w3.org/2000/svg">'
             '<script>alert(1)</script></svg>\n', "notes.txt": "<b>hi</b>\n", "blob.bin": b"\x00\x01\x02"}
    work = make_repo(tmp_path / "w", git_env, files)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    wait_pipeline(server, push(server, user, work, "main"))
    base = server.http_url + f"/ui/{tenant}/{repo}/raw?rev=main&path="
    text = requests.get(base + "notes.txt", timeout=30)
    assert text.headers["Content-Type"].startswith("text/plain") and text.text == "<b>hi</b>\n"
    for name in ("page.html", "logo.svg", "blob.bin"):
        response = requests.get(base + name, timeout=30)
        assert response.headers["Content-Type"] == "application/octet-stream", name
        assert response.headers["Content-Disposition"].startswith("attachment"), name
        assert "sandbox" in response.headers["Content-Security-Policy"], name
        assert response.content == (files[name] if isinstance(files[name], bytes) else files[name].encode())


def test_pages_of_a_pushed_repository(server: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "w", git_env, {"README.md": "# Widgets\n\nSee [docs](docs/a.py).\n",
                                               "docs/a.py": "def f():\n    return 1\n"}, message="first")
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    pipeline = wait_pipeline(server, push(server, user, work, "main"))
    assert requests.get(server.http_url + f"/ui/{tenant}/{repo}", timeout=30).status_code == 404  # private
    http = signed_in(server, user)
    base = server.http_url + f"/ui/{tenant}/{repo}"
    summary = http.get(base, timeout=30).text
    assert "<h1>Widgets</h1>" in summary and server.repo_url(tenant, repo) in summary
    tree = http.get(base + "/tree?rev=main&path=docs", timeout=30).text
    assert "a.py" in tree
    source = http.get(base + "/blob?rev=main&path=docs/a.py", timeout=30).text
    assert '<span class="k">def</span>' in source  # highlighted by Pygments
    commits = http.get(base + "/commits", timeout=30).text
    assert "first" in commits
    commit = http.get(base + f"/commit/{pipeline.commit}", timeout=30).text
    assert "+def f():" in commit
    refs_page = http.get(base + "/refs", timeout=30).text
    # The archive tag is signed by the server's key (docs/provenance.md), checked by git verify-tag.
    assert pipeline.archive_tag in refs_page and "verified" in refs_page and "unsigned" not in refs_page
    pushes = http.get(base + "/pushes", timeout=30).text
    assert user.fingerprint in pushes and "refs/heads/main" in pushes
    pipelines = http.get(base + "/pipelines", timeout=30).text
    assert f"/pipelines/{pipeline.id}" in pipelines
    log = http.get(base + f"/pipelines/{pipeline.id}/log?offset=0", timeout=30)
    assert log.headers["X-Pipeline-Status"] == "succeeded" and int(log.headers["X-Log-Offset"]) == len(log.content)
    for bad in ("/tree?rev=:/first", "/tree?rev=main@{0}", "/blob?rev=main&path=../../etc/passwd",
                "/commit/zzzz", "/pipelines/99999999"):
        assert http.get(base + bad, timeout=30).status_code == 404, bad


def test_an_admin_gives_and_takes_access_through_the_forms(server: GitServer) -> None:
    tenant = server.new_tenant()
    admin, member = server.new_user(tenant, role="admin"), server.new_user(tenant)
    repo = server.new_repo(tenant)
    base = server.http_url + f"/ui/{tenant}/{repo}"
    as_admin, as_member = signed_in(server, admin), signed_in(server, member)
    assert as_member.get(base, timeout=30).status_code == 404
    token = csrf_token(as_admin.get(base + "/access", timeout=30).text)
    form = {"csrf_token": token, "kind": "user", "name": member.name, "permission": "read"}
    assert as_admin.post(base + "/access/grants", data=form, allow_redirects=False, timeout=30).status_code == 303
    assert as_member.get(base, timeout=30).status_code == 200
    assert member.name in as_admin.get(base + "/access", timeout=30).text
    # A reader cannot give access (the page is for admins), even with a valid token of its own.
    own = csrf_token(as_member.get(base, timeout=30).text)
    refused = as_member.post(base + "/access/grants", data={**form, "csrf_token": own, "permission": "admin"},
                             allow_redirects=False, timeout=30)
    assert refused.status_code == 403
    bad = as_admin.post(base + "/access/grants", data={**form, "kind": "robot"}, allow_redirects=False, timeout=30)
    assert bad.status_code == 400 and "kind must be one of" in bad.text
    gone = as_admin.post(base + "/access/grants/remove", data=form, allow_redirects=False, timeout=30)
    assert gone.status_code == 303
    assert as_member.get(base, timeout=30).status_code == 404


def test_cancel_and_redeliver_through_the_forms(server: GitServer, git_env: dict[str, str],
                                                tmp_path: Path) -> None:
    toml = '[[steps]]\nname = "long"\ncommand = "echo RUNNING; exec sleep 600"\n'
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    reader = server.new_user(tenant)
    repo = server.new_repo(tenant, builds=True, grants={reader.name: "read"})
    hook = server.api("POST", f"/api/v1/tenants/{tenant}/repos/{repo}/webhooks",
                      json={"url": "http://127.0.0.1:9/nobody-listens", "events": ["push"]})
    assert hook.status_code == 201, hook.text
    work = make_repo(tmp_path / "w", git_env, {".gitserver/pipeline.toml": toml})
    server.git(admin, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    pid = push(server, admin, work, "main")
    wait_pipeline(server, pid, statuses=("running",))
    base = server.http_url + f"/ui/{tenant}/{repo}"
    as_admin, as_reader = signed_in(server, admin), signed_in(server, reader)
    # A reader sees the pipeline but has no cancel button, and its POST is refused.
    page = as_reader.get(base + f"/pipelines/{pid}", timeout=30).text
    assert "Cancel this pipeline" not in page
    assert as_reader.post(base + f"/pipelines/{pid}/cancel", data={"csrf_token": csrf_token(page)},
                          allow_redirects=False, timeout=30).status_code == 403
    page = as_admin.get(base + f"/pipelines/{pid}", timeout=30).text
    assert "Cancel this pipeline" in page
    cancel = as_admin.post(base + f"/pipelines/{pid}/cancel", data={"csrf_token": csrf_token(page)},
                           allow_redirects=False, timeout=30)
    assert cancel.status_code == 303
    assert wait_pipeline(server, pid, timeout=30).status == "cancelled"
    # The push's delivery is listed for admins only; redeliver makes a new one.
    assert as_reader.get(base + "/webhooks", timeout=30).status_code == 403
    with server.db() as session:
        before = session.scalar(select(func.count()).select_from(models.Delivery)
                                .where(models.Delivery.webhook_id == hook.json()["id"])) or 0
    assert before >= 1
    hooks_page = as_admin.get(base + "/webhooks", timeout=30).text
    assert "http://127.0.0.1:9/nobody-listens" in hooks_page
    first = int(hooks_page.split("/webhooks/deliveries/")[1].split("/")[0])
    again = as_admin.post(base + f"/webhooks/deliveries/{first}/redeliver",
                          data={"csrf_token": csrf_token(hooks_page)}, allow_redirects=False, timeout=30)
    assert again.status_code == 303
    with server.db() as session:
        after = session.scalar(select(func.count()).select_from(models.Delivery)
                               .where(models.Delivery.webhook_id == hook.json()["id"])) or 0
    assert after == before + 1
