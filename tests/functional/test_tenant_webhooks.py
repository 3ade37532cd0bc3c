"""Tenant webhooks and the tenant's create template, through the real server: a tenant webhook
hears the creation of every repository of its tenant (API, CLI, Repour's /internal-scm) and
every event of those repositories, signed, logged and redeliverable like a repository webhook;
a create template's pipeline file runs for each new repository with its coordinates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.functional.conftest import GitServer, make_repo
from tests.functional.test_webhooks import SECRET, Receiver, check_request

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def tenant_hooks(tenant: str) -> str:
    return f"/api/v1/tenants/{tenant}/webhooks"


def collect(receiver: Receiver, count: int, what: str) -> list[dict[str, Any]]:
    return [receiver.next(what=f"{what} ({n + 1} of {count})") for n in range(count)]


def test_tenant_webhook_hears_every_repository_creation_and_event(server: GitServer, git_env: dict[str, str],
                                                                  tmp_path: Path, receiver: Receiver) -> None:
    tenant = server.new_tenant()
    tadmin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant, role="member")
    created = server.api("POST", tenant_hooks(tenant), json={"url": receiver.url + "/t", "secret": SECRET},
                         token=tadmin.token)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["events"] == ["push", "pipeline", "repository"]
    assert created.headers["Location"].endswith(f"{tenant_hooks(tenant)}/{hook['id']}")
    # Only the tenant's admins; other tenants' admins see nothing there.
    assert server.api("GET", tenant_hooks(tenant), token=member.token).status_code == 403
    stranger = server.new_user(server.new_tenant(), role="admin")
    assert server.api("GET", tenant_hooks(tenant), token=stranger.token).status_code == 404
    # A repository webhook cannot ask for repository events (its repository exists already).
    assert server.api("POST", f"/api/v1/tenants/{tenant}/repos", json={"name": "plain"},
                      token=tadmin.token).status_code == 201
    refused = server.api("POST", f"/api/v1/tenants/{tenant}/repos/plain/webhooks",
                         json={"url": receiver.url, "events": ["repository"]}, token=tadmin.token)
    assert refused.status_code == 400 and "events" in refused.json()["description"]
    plain_created = receiver.next(what="the creation of plain")
    assert json.loads(plain_created["body"])["repository"]["name"] == "plain"

    # Another tenant's repositories are not heard.
    assert server.api("POST", f"/api/v1/tenants/{stranger.tenant}/repos", json={"name": "elsewhere"},
                      token=stranger.token).status_code == 201
    # Created through the API, the CLI and Repour's /internal-scm: one event each.
    resp = server.api("POST", f"/api/v1/tenants/{tenant}/repos", json={"name": "via-api", "description": "d"},
                      token=tadmin.token)
    assert resp.status_code == 201, resp.text
    server.cli("repo", "create", tenant, "via-cli")
    resp = server.api("POST", "/internal-scm", json={"project": f"{tenant}/via-scm", "owner_groups": []},
                      token=tadmin.token)
    assert resp.status_code == 200, resp.text
    events = collect(receiver, 3, "repository created events")
    bodies = []
    for request in events:
        check_request(request, "repository")
        bodies.append(json.loads(request["body"]))
    assert sorted(b["repository"]["name"] for b in bodies) == ["via-api", "via-cli", "via-scm"]
    via_api = next(b for b in bodies if b["repository"]["name"] == "via-api")
    assert set(via_api) == {"action", "repository"} and via_api["action"] == "created"
    assert via_api["repository"]["full_name"] == f"{tenant}/via-api"
    assert via_api["repository"]["ssh_url"] == f"{server.ssh_base}/{tenant}/via-api.git"
    assert via_api["repository"]["description"] == "d"

    # Every event of every repository of the tenant: a push to via-api gives push and pipeline.
    work = make_repo(tmp_path / "work", git_env, {"README.md": "hello\n"})
    server.git(tadmin, "push", server.repo_url(tenant, "via-api"), "main", cwd=work)
    pushed = {r["headers"]["X-Gitserver-Event"]: json.loads(r["body"])
              for r in collect(receiver, 2, "push and pipeline events")}
    assert pushed["push"]["repository"]["name"] == "via-api"
    assert pushed["pipeline"]["pipeline"]["status"] == "succeeded"
    assert receiver.requests.empty()

    # The delivery log and redelivery, on the tenant's paths.
    def logged() -> list[dict[str, Any]] | None:
        items = server.api("GET", f"{tenant_hooks(tenant)}/{hook['id']}/deliveries", token=tadmin.token).json()["items"]
        return items if len(items) == 6 and all(i["status"] == "delivered" for i in items) else None

    items = wait_for(logged, what="six delivered deliveries")
    first = items[-1]
    assert first["event"] == "repository"
    detail = server.api("GET", f"{tenant_hooks(tenant)}/{hook['id']}/deliveries/{first['id']}", token=tadmin.token)
    assert detail.status_code == 200 and detail.json()["request"]["body"]["repository"]["name"] == "plain"
    again = server.api("POST", f"{tenant_hooks(tenant)}/{hook['id']}/deliveries/{first['id']}/redeliver",
                       token=tadmin.token)
    assert again.status_code == 202, again.text
    resent = receiver.next(what="the redelivery")
    assert resent["body"] == plain_created["body"]
    assert resent["headers"]["X-Gitserver-Delivery"] != plain_created["headers"]["X-Gitserver-Delivery"]
    # Deleted: nothing more is sent.
    assert server.api("DELETE", f"{tenant_hooks(tenant)}/{hook['id']}", token=tadmin.token).status_code == 204
    assert server.api("POST", f"/api/v1/tenants/{tenant}/repos", json={"name": "after-delete"},
                      token=tadmin.token).status_code == 201
    assert server.api("GET", f"{tenant_hooks(tenant)}/{hook['id']}", token=tadmin.token).status_code == 404


PIPELINE_FILE = r'''
[[steps]]
name = "provision"
command = """echo provisioning $GITSERVER_REPO from $GITSERVER_TEMPLATE \
  on $GITSERVER_EVENT $GITSERVER_ACTION at $GITSERVER_SSH_URL"""
'''


def test_create_template_runs_for_each_new_repository(server: GitServer, git_env: dict[str, str],
                                                      tmp_path: Path, receiver: Receiver) -> None:
    tenant = server.new_tenant()
    tadmin = server.new_user(tenant, role="admin")
    server.new_repo(tenant, name="solum-template")
    work = make_repo(tmp_path / "template", git_env, {".gitserver/pipeline.toml": PIPELINE_FILE})
    server.git(tadmin, "push", server.repo_url(tenant, "solum-template"), "main", cwd=work)
    # Its own push pipeline (archive) is over before the tenant webhook below exists.
    wait_for(lambda: all(p["status"] in FINAL for p in server.api(
        "GET", f"/api/v1/tenants/{tenant}/repos/solum-template/pipelines", token=tadmin.token).json()["items"]),
        timeout=120, what="the template's push pipeline")

    missing = server.api("PATCH", f"/api/v1/tenants/{tenant}", json={"create_template": "nope"}, token=tadmin.token)
    assert missing.status_code == 400 and "create_template" in missing.json()["description"]
    member = server.new_user(tenant, role="member")
    assert server.api("PATCH", f"/api/v1/tenants/{tenant}", json={"create_template": "solum-template"},
                      token=member.token).status_code == 403
    resp = server.api("PATCH", f"/api/v1/tenants/{tenant}", json={"create_template": "solum-template"},
                      token=tadmin.token)
    assert resp.status_code == 200 and resp.json()["create_template"] == "solum-template", resp.text
    assert server.api("POST", tenant_hooks(tenant), json={"url": receiver.url, "events": ["pipeline"]},
                      token=tadmin.token).status_code == 201

    assert server.api("POST", f"/api/v1/tenants/{tenant}/repos", json={"name": "app1"},
                      token=tadmin.token).status_code == 201
    pipelines = server.api("GET", f"/api/v1/tenants/{tenant}/repos/app1/pipelines", token=tadmin.token).json()["items"]
    assert [p["kind"] for p in pipelines] == ["create"]

    def finished() -> dict[str, Any] | None:
        body = server.api("GET", f"/api/v1/pipelines/{pipelines[0]['id']}", token=tadmin.token).json()
        return body if body["status"] in FINAL else None

    done = wait_for(finished, timeout=120, what=f"the create pipeline\n{server.logs()}")
    log = server.api("GET", f"/api/v1/pipelines/{done['id']}/log", token=tadmin.token).text
    assert done["status"] == "succeeded", log
    assert (f"provisioning {tenant}/app1 from {tenant}/solum-template on repository created at "
            f"{server.ssh_base}/{tenant}/app1.git") in log
    event = json.loads(receiver.next(what="the create pipeline's event")["body"])
    assert event["repository"]["name"] == "app1" and event["pipeline"]["status"] == "succeeded"

    # Removed: new repositories set nothing off.
    assert server.api("PATCH", f"/api/v1/tenants/{tenant}", json={"create_template": None},
                      token=tadmin.token).json()["create_template"] is None
    assert server.api("POST", f"/api/v1/tenants/{tenant}/repos", json={"name": "app2"},
                      token=tadmin.token).status_code == 201
    assert server.api("GET", f"/api/v1/tenants/{tenant}/repos/app2/pipelines", token=tadmin.token).json()["items"] == []
