"""Many SSH keys at once: ``POST …/users/{u}/keys/batch`` and ``gitserver key import``, against
the real server on SQLite and PostgreSQL. All or nothing, a report line per refused key, and an
imported key really logs in."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.functional.conftest import GitServer
from tests.functional.test_api_resources import assert_error, tenant_url


def _fingerprints(server: GitServer, tenant: str, user: str) -> set[str]:
    items = server.api("GET", f"{tenant_url(tenant)}/users/{user}/keys?limit=100").json()["items"]
    return {k["fingerprint"] for k in items}


def test_batch_adds_every_key_and_an_imported_key_logs_in(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "read"})
    new = [server.new_key("batch") for _ in range(3)]
    lines = ["# laptops", new[0][1], "", new[1][1] + "  ", new[2][1]]

    resp = server.api("POST", f"{tenant_url(tenant)}/users/{user.name}/keys/batch", {"keys": lines})

    assert resp.status_code == 201, resp.text
    assert resp.json() == {"imported": True, "added": 3, "total": 3, "refused": []}
    assert len(_fingerprints(server, tenant, user.name)) == 4
    out = server.git(new[2][0], "ls-remote", server.repo_url(tenant, repo))
    assert out.returncode == 0


def test_batch_with_a_refused_line_adds_nothing_and_names_each_line(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    other = server.new_user(tenant)
    url = f"{tenant_url(tenant)}/users/{user.name}/keys/batch"
    good = server.new_key("good")[1]
    lines = [good, "ssh-ed25519 AAAA broken", other.public_key, good, "ssh-dss AAAAB3NzaC1kc3MAAAABAQ== me"]

    resp = server.api("POST", url, {"keys": lines})

    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["imported"] is False and body["added"] == 0 and body["total"] == 5
    assert "nothing was imported" in body["description"]
    reasons = {r["line"]: r["reason"] for r in body["refused"]}
    assert sorted(reasons) == [2, 3, 4, 5]
    assert "not valid" in reasons[2]
    assert "already registered (another user's key)" in reasons[3]
    assert reasons[4] == "the same key as line 1"
    assert "DSA" in reasons[5]
    assert _fingerprints(server, tenant, user.name) == {user.fingerprint}

    resp = server.api("POST", url, {"keys": lines, "skip_refused": True})
    assert resp.status_code == 201, resp.text
    assert resp.json()["added"] == 1 and len(resp.json()["refused"]) == 4
    assert len(_fingerprints(server, tenant, user.name)) == 2


def test_batch_refuses_a_malformed_body(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    url = f"{tenant_url(tenant)}/users/{user.name}/keys/batch"
    assert_error(server.api("POST", url, {"keys": "ssh-ed25519 AAAA"}), 400, field="keys")
    assert_error(server.api("POST", url, {"keys": [1, 2]}), 400, field="keys")
    assert_error(server.api("POST", url, {"keys": [], "skip": True}), 400)
    assert_error(server.api("POST", url, {"keys": []}, token=""), 401)


def test_cli_import_is_all_or_nothing_with_a_report_per_line(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    keys = [server.new_key("cli")[1] for _ in range(2)]
    bad = tmp_path / "authorized_keys.bad"
    bad.write_text(f"{keys[0]}\n\n# a comment\nssh-rsa AAAAB3NzaC1yc2E= short\n{keys[1]}\n")

    result = server.cli("key", "import", tenant, user.name, str(bad), check=False)

    assert result.returncode == 1
    assert f"{bad}:4: refused: key data is not valid" in result.stderr
    assert "nothing imported" in result.stderr and "Traceback" not in result.stderr
    assert _fingerprints(server, tenant, user.name) == {user.fingerprint}

    result = server.cli("key", "import", tenant, user.name, str(bad), "--skip-refused", check=False)
    assert result.returncode == 1
    assert result.stdout.strip() == f"imported 2 of 3 keys for {tenant}/{user.name}"
    assert len(_fingerprints(server, tenant, user.name)) == 3

    good = tmp_path / "authorized_keys"
    good.write_text(server.new_key("cli")[1] + "\n")
    result = server.cli("key", "import", tenant, user.name, "-", input=good.read_text())
    assert result.stdout.strip() == f"imported 1 of 1 keys for {tenant}/{user.name}"

    missing = server.cli("key", "import", tenant, user.name, str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and f"cannot read {tmp_path / 'nope'}" in missing.stderr
    nobody = server.cli("key", "import", tenant, "nobody", str(good), check=False)
    # exit 3: not found (docs/cli.md)
    assert nobody.returncode == 3 and "not found" in nobody.stderr and "Traceback" not in nobody.stderr


def test_keys_imported_with_an_expiring_token_expire_with_it(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    url = f"{tenant_url(tenant)}/users/{user.name}"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    made = server.api("POST", f"{url}/tokens", {"name": "brief", "expires_at": soon.isoformat()}, token=user.token)
    assert made.status_code == 201, made.text
    public = server.new_key("brief")[1]

    resp = server.api("POST", f"{url}/keys/batch", {"keys": [public]}, token=made.json()["token"])

    assert resp.status_code == 201, resp.text
    keys = server.api("GET", f"{url}/keys?limit=100").json()["items"]
    imported = next(k for k in keys if k["key"].split()[1] == public.split()[1])
    assert dt.datetime.fromisoformat(imported["expires_at"]) == soon
