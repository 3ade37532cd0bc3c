"""A token that expires cannot mint one that outlives it."""

from __future__ import annotations

import datetime as dt

from tests.functional.conftest import GitServer


def test_expiring_token_cannot_mint_a_longer_lived_one(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    tokens_url = f"/api/v1/tenants/{tenant}/users/{user.name}/tokens"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    made = server.api("POST", tokens_url, {"name": "for-a-task", "expires_at": soon.isoformat()}, token=user.token)
    assert made.status_code == 201, made.text
    short = made.json()["token"]

    # By default the child expires with its parent, never later.
    child = server.api("POST", tokens_url, {"name": "child"}, token=short)
    assert child.status_code == 201, child.text
    assert dt.datetime.fromisoformat(child.json()["expires_at"]) == soon

    later = (soon + dt.timedelta(days=30)).isoformat()
    refused = server.api("POST", tokens_url, {"name": "forever", "expires_at": later}, token=short)
    assert refused.status_code == 403, refused.text
    assert refused.json()["field"] == "expires_at" and "outlives" in refused.json()["description"]


def test_a_key_added_with_an_expiring_token_expires_with_it(server: GitServer) -> None:
    import time

    tenant = server.new_tenant()
    user = server.new_user(tenant, role="admin")
    repo = server.new_repo(tenant)
    api = f"/api/v1/tenants/{tenant}"
    # Whole seconds: what the API stores and returns. Long enough for one SSH login below.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)).replace(microsecond=0)
    made = server.api("POST", f"{api}/users/{user.name}/tokens", {"name": "brief", "expires_at": soon.isoformat()},
                      token=user.token)
    assert made.status_code == 201, made.text
    brief = made.json()["token"]

    key_path, public = server.new_key("brief")
    added = server.api("POST", f"{api}/users/{user.name}/keys", {"key": public, "title": "laptop"}, token=brief)
    assert added.status_code == 201, added.text
    assert dt.datetime.fromisoformat(added.json()["expires_at"]) == soon
    deploy_path, deploy_public = server.new_key("deploy")
    deploy = server.api("POST", f"{api}/repos/{repo}/deploy-keys", {"key": deploy_public}, token=brief)
    assert deploy.status_code == 201 and dt.datetime.fromisoformat(deploy.json()["expires_at"]) == soon
    # A key added with a token that does not expire does not expire either.
    _, other = server.new_key("forever")
    forever = server.api("POST", f"{api}/users/{user.name}/keys", {"key": other}, token=user.token)
    assert forever.status_code == 201 and forever.json()["expires_at"] is None

    assert server.ssh(key_path).returncode == 0
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
    for expired in (key_path, deploy_path):
        late = server.ssh(expired)
        assert late.returncode == 255 and "Permission denied" in late.stderr
