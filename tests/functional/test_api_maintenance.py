"""Repository maintenance through the REST API (``…/repos/{r}/maintenance``), against the
real server processes, real git and OpenSSH, on SQLite and PostgreSQL: GET shows the counts
pushes make grow; POST queues one job (a second POST answers the same job) that a worker runs,
after which GET shows fewer packs, a bitmap and a commit-graph; only the repository's admins
may see or ask, and whoever cannot read the repository gets the 404 of a missing one."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitserver.admin import tenants, tokens, users
from tests.conftest import wait_for
from tests.functional.conftest import GitServer, User, commit_files, make_repo, start_server

FINAL = ("succeeded", "failed", "cancelled")
SETTINGS = {
    # Pushes never queue maintenance here: the POST alone must make the job, and the manual
    # request must work with automatic maintenance switched off (like `gitserver maintain`).
    "GITSERVER_MAINTENANCE_ENABLED": "false",
    "GITSERVER_MAINTENANCE_MAX_PACKS": "2",
    "GITSERVER_MAINTENANCE_MAX_LOOSE_OBJECTS": "0",
}


def maintenance_url(tenant: str, repo: str) -> str:
    return f"/api/v1/tenants/{tenant}/repos/{repo}/maintenance"


@pytest.fixture()
def srv(db_url: str, git_env: dict[str, str], tmp_path: Path) -> Any:
    # No worker at first: the test starts one once it has seen the job queued, so that
    # "a second POST answers the same job" does not depend on how fast a worker is.
    server = start_server(tmp_path, db_url, git_env, extra_env=SETTINGS, parts=("ssh", "api"))
    try:
        yield server
    finally:
        server.stop()


def test_get_shows_the_counts_and_post_queues_one_job_a_worker_runs(
        srv: GitServer, git_env: dict[str, str], tmp_path: Path) -> None:
    tenant = srv.new_tenant()
    owner = srv.new_user(tenant, role="admin")
    pusher = srv.new_user(tenant)
    repo = srv.new_repo(tenant, "widgets", grants={pusher.name: "write"})
    url = maintenance_url(tenant, repo)

    def get() -> dict[str, Any]:
        resp = srv.api("GET", url, token=owner.token)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    fresh = get()
    assert {k: fresh[k] for k in ("tenant", "repo", "packs", "loose_objects", "bitmap", "commit_graph",
                                  "due", "job")} == {
        "tenant": tenant, "repo": repo, "packs": 0, "loose_objects": 0, "bitmap": False,
        "commit_graph": False, "due": False, "job": None}
    assert fresh["settings"] == {"enabled": False, "max_packs": 2, "max_loose_objects": 0,
                                 "delay_seconds": 60.0}
    assert fresh["url"] == f"{srv.http_url}{url}"

    # Every push keeps its pack (as pushes of more than 100 objects do).
    subprocess.run(["git", "--git-dir", str(srv.repo_path(tenant, repo)), "config", "receive.unpackLimit", "1"],
                   check=True, env=git_env)
    work = make_repo(tmp_path / "work", git_env, {"README.md": "widgets\n"})
    srv.git(pusher, "remote", "add", "origin", srv.repo_url(tenant, repo), cwd=work)
    packs, tips = [], {}
    for i in range(4):
        tips[f"refs/heads/b{i}"] = commit_files(work, git_env, {f"f{i}.txt": f"{i}\n"}, f"change {i}")
        srv.git(pusher, "push", "-q", "origin", f"HEAD:refs/heads/b{i}", cwd=work)
        packs.append(get()["packs"])
    assert packs == [1, 2, 3, 4], packs
    crowded = get()
    assert crowded["due"] is True and crowded["bitmap"] is False and crowded["job"] is None, crowded

    # Asked for: queued now, although automatic maintenance is off and no push queued one.
    first = srv.api("POST", url, token=owner.token)
    assert first.status_code == 202, first.text
    assert first.headers["Location"] == url
    job = first.json()["job"]
    assert job["status"] == "queued" and job["finished_at"] is None and job["error"] is None, job
    # Asked again (with an empty options object) while it waits: the same job, not a second.
    again = srv.api("POST", url, json={}, token=owner.token)
    assert again.status_code == 200, again.text
    assert again.json()["job"]["id"] == job["id"]
    assert get()["job"]["id"] == job["id"]
    refused = srv.api("POST", url, json={"now": True}, token=owner.token)
    assert refused.status_code == 400
    assert refused.json()["field"] == "now" and "unknown field 'now'" in refused.json()["description"]

    srv.procs["worker"] = srv.spawn("worker")

    def finished() -> dict[str, Any] | None:
        state = get()
        return state if state["job"] and state["job"]["status"] in FINAL else None

    done = wait_for(finished, timeout=120, interval=0.2, what=f"the maintain job to finish\n{srv.logs()}")
    assert done["job"]["id"] == job["id"]
    assert done["job"]["status"] == "succeeded" and done["job"]["error"] is None, done["job"]
    assert done["job"]["finished_at"] is not None and done["job"]["attempts"] == 1
    assert done["packs"] < packs[-1], done
    assert done["bitmap"] is True and done["commit_graph"] is True, done
    assert done["due"] is False, done
    # Every pushed branch is still served as it was pushed.
    refs = srv.git(pusher, "ls-remote", "--heads", srv.repo_url(tenant, repo)).stdout
    listed = {ref: oid for oid, ref in (line.split("\t") for line in refs.splitlines())}
    assert {ref: listed.get(ref) for ref in tips} == tips, refs


# --- who may look and ask: the shared server, on each backend ------------------------------------

@pytest.fixture(scope="module")
def world(server: GitServer) -> dict[str, Any]:
    tenant = server.new_tenant()
    member = server.new_user(tenant)
    repos = {"private": server.new_repo(tenant)}
    for permission in ("read", "write", "admin"):
        repos[permission] = server.new_repo(tenant, grants={member.name: permission})
    return {"tenant": tenant, "member": member, "repos": repos,
            "tenant_admin": server.new_user(tenant, role="admin"),
            "other_admin": server.new_user(server.new_tenant(), role="admin")}


def hidden(tenant: str, repo: str) -> dict[str, str]:
    """The answer to a repository that does not exist, and to one the caller cannot read."""
    return {"title": "Not Found", "description": f"repository {tenant}/{repo} not found"}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("who", "repo", "status"), [
    ("member", "read", 403),       # can read it: told it is not allowed
    ("member", "write", 403),
    ("member", "private", 404),    # cannot read it: as if it did not exist
    ("other_admin", "private", 404),
])
def test_only_admins_of_the_repository_see_or_ask(server: GitServer, world: dict[str, Any], method: str,
                                                  who: str, repo: str, status: int) -> None:
    tenant, name = world["tenant"], world["repos"][repo]
    user: User = world[who]
    resp = server.api(method, maintenance_url(tenant, name), token=user.token)
    assert resp.status_code == status, resp.text
    if status == 404:
        assert resp.json() == hidden(tenant, name)
    else:
        assert resp.json()["description"] == f"you have {repo} access to {tenant}/{name}; this needs admin"
    # Nothing was queued by the refused request.
    assert server.api("GET", maintenance_url(tenant, name)).json()["job"] is None


@pytest.mark.parametrize("who", ["site_admin", "tenant_admin", "member"])
def test_admins_of_the_repository_see_it(server: GitServer, world: dict[str, Any], who: str) -> None:
    # The member holds an admin grant on this one: repository admins, like for its settings.
    tenant, name = world["tenant"], world["repos"]["admin"]
    token = server.admin_token if who == "site_admin" else world[who].token
    resp = server.api("GET", maintenance_url(tenant, name), token=token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["repo"] == name and resp.json()["packs"] == 0


def test_a_token_without_the_admin_scope_is_refused(server: GitServer, world: dict[str, Any]) -> None:
    tenant, name = world["tenant"], world["repos"]["private"]
    with server.db() as session:
        user = users.get_user(session, tenants.get_tenant(session, tenant), world["tenant_admin"].name)
        _row, token = tokens.create_token(session, user=user, name="ci", scopes=("read", "write"))
    for method in ("GET", "POST"):
        resp = server.api(method, maintenance_url(tenant, name), token=token)
        assert resp.status_code == 403, resp.text
        assert resp.json()["description"] == "this token lacks the 'admin' scope"
    assert server.api("GET", maintenance_url(tenant, name), token="").status_code == 401


def test_unknown_tenant_or_repository_is_404(server: GitServer, world: dict[str, Any]) -> None:
    tenant = world["tenant"]
    for method in ("GET", "POST"):
        resp = server.api(method, maintenance_url(tenant, "nope"))
        assert resp.status_code == 404 and resp.json() == hidden(tenant, "nope")
        resp = server.api(method, maintenance_url("no-such-tenant", "nope"))
        assert resp.status_code == 404 and resp.json() == hidden("no-such-tenant", "nope")
