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
