"""Permission changes made over the REST API take effect on the very next SSH connection,
checked with the real OpenSSH client and git against the real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.conftest import GitServer, User, commit_files, make_repo


@pytest.fixture
def shared(server: GitServer, tmp_path: Path) -> dict[str, object]:
    """A tenant with an admin who pushed one commit, and a member with no access yet."""
    tenant = server.new_tenant()
    admin = server.new_user(tenant, role="admin")
    member = server.new_user(tenant)
    repo = server.new_repo(tenant)
    work = make_repo(tmp_path / "work", server.git_env, {"README.md": "protected\n"})
    url = server.repo_url(tenant, repo)
    server.git(admin, "push", url, "main", cwd=work)
    return {"tenant": tenant, "admin": admin, "member": member, "repo": repo, "url": url, "work": work,
            "api": f"/api/v1/tenants/{tenant}/repos/{repo}"}


def clone(server: GitServer, who: User | Path, url: str, dest: Path) -> tuple[int, str]:
    result = server.git(who, "clone", "-q", url, str(dest), check=False, timeout=60)
    return result.returncode, result.stderr


def test_grant_then_revoke(server: GitServer, tmp_path: Path, shared: dict[str, object]) -> None:
    member: User = shared["member"]  # type: ignore[assignment]
    url, api = str(shared["url"]), str(shared["api"])
    code, err = clone(server, member, url, tmp_path / "c0")
    assert code != 0 and "not found" in err

    assert server.api("PUT", f"{api}/grants/users/{member.name}", {"permission": "read"}).status_code == 201
    code, err = clone(server, member, url, tmp_path / "c1")
    assert code == 0, err
    assert (tmp_path / "c1" / "README.md").read_text() == "protected\n"

    # Read is not write: the push is refused, naming the reason.
    commit_files(tmp_path / "c1", server.git_env, {"x.txt": "x"})
    push = server.git(member, "push", "origin", "main", cwd=tmp_path / "c1", check=False)
    assert push.returncode != 0 and "read access" in push.stderr

    assert server.api("PUT", f"{api}/grants/users/{member.name}", {"permission": "write"}).status_code == 200
    push = server.git(member, "push", "origin", "main", cwd=tmp_path / "c1", check=False)
    assert push.returncode == 0, push.stderr

    assert server.api("DELETE", f"{api}/grants/users/{member.name}").status_code == 204
    code, err = clone(server, member, url, tmp_path / "c2")
    assert code != 0 and "not found" in err  # exactly like a missing repository
    assert not (tmp_path / "c2").exists()


def test_group_grant_and_membership(server: GitServer, tmp_path: Path, shared: dict[str, object]) -> None:
    member: User = shared["member"]  # type: ignore[assignment]
    tenant, url, api = shared["tenant"], str(shared["url"]), str(shared["api"])
    groups = f"/api/v1/tenants/{tenant}/groups"
    assert server.api("POST", groups, {"name": "readers"}).status_code == 201
    assert server.api("PUT", f"{api}/grants/groups/readers", {"permission": "read"}).status_code == 201
    assert clone(server, member, url, tmp_path / "c0")[0] != 0
    assert server.api("PUT", f"{groups}/readers/members/{member.name}").status_code == 200
    assert clone(server, member, url, tmp_path / "c1")[0] == 0
    assert server.api("DELETE", f"{groups}/readers/members/{member.name}").status_code == 204
    assert clone(server, member, url, tmp_path / "c2")[0] != 0


def test_disable_user_refuses_ssh_and_tokens(server: GitServer, tmp_path: Path, shared: dict[str, object]) -> None:
    member: User = shared["member"]  # type: ignore[assignment]
    tenant, url, api = shared["tenant"], str(shared["url"]), str(shared["api"])
    server.api("PUT", f"{api}/grants/users/{member.name}", {"permission": "write"})
    assert clone(server, member, url, tmp_path / "c1")[0] == 0

    assert server.api("DELETE", f"/api/v1/tenants/{tenant}/users/{member.name}").status_code == 204
    code, err = clone(server, member, url, tmp_path / "c2")
    assert code != 0 and "Permission denied" in err
    assert server.ssh(member).returncode != 0
    assert server.api("GET", f"/api/v1/tenants/{tenant}", token=member.token).status_code == 401

    assert server.api("PATCH", f"/api/v1/tenants/{tenant}/users/{member.name}",
                      {"disabled": False}).status_code == 200
    assert clone(server, member, url, tmp_path / "c3")[0] == 0


def test_deleted_key_refused_at_next_connection(server: GitServer, tmp_path: Path,
                                                shared: dict[str, object]) -> None:
    member: User = shared["member"]  # type: ignore[assignment]
    tenant, url, api = shared["tenant"], str(shared["url"]), str(shared["api"])
    server.api("PUT", f"{api}/grants/users/{member.name}", {"permission": "read"})
    keys = server.api("GET", f"/api/v1/tenants/{tenant}/users/{member.name}/keys").json()["items"]
    assert clone(server, member, url, tmp_path / "c1")[0] == 0
    assert server.api("DELETE", f"/api/v1/tenants/{tenant}/users/{member.name}/keys/{keys[0]['id']}").status_code == 204
    code, err = clone(server, member, url, tmp_path / "c2")
    assert code != 0 and "Permission denied" in err


def test_deploy_keys_read_only_and_write(server: GitServer, tmp_path: Path, shared: dict[str, object]) -> None:
    url, api = str(shared["url"]), str(shared["api"])
    ro_path, ro_public = server.new_key("deploy-ro")
    rw_path, rw_public = server.new_key("deploy-rw")
    resp = server.api("POST", f"{api}/deploy-keys", {"key": ro_public, "title": "ci"})
    assert resp.status_code == 201 and resp.json()["write"] is False
    ro_id = resp.json()["id"]
    assert server.api("POST", f"{api}/deploy-keys", {"key": rw_public, "write": True}).status_code == 201

    code, err = clone(server, ro_path, url, tmp_path / "ro")
    assert code == 0, err
    commit_files(tmp_path / "ro", server.git_env, {"ci.txt": "ci"})
    push = server.git(ro_path, "push", "origin", "main", cwd=tmp_path / "ro", check=False)
    assert push.returncode != 0 and "cannot push" in push.stderr
    push = server.git(rw_path, "push", url, "main", cwd=tmp_path / "ro", check=False)
    assert push.returncode == 0, push.stderr

    # A deploy key reaches only its own repository.
    other = server.new_repo(str(shared["tenant"]), visibility="internal")
    code, err = clone(server, ro_path, server.repo_url(str(shared["tenant"]), other), tmp_path / "other")
    assert code != 0 and "not found" in err

    # The push by the deploy key is in the audit log, with no user and the key's fingerprint.
    latest = server.api("GET", f"{api}/pushes", params={"limit": "1"}).json()["items"][0]
    assert latest["user"] is None
    assert latest["key_fingerprint"] == server.api("GET", f"{api}/deploy-keys").json()["items"][1]["fingerprint"]

    assert server.api("DELETE", f"{api}/deploy-keys/{ro_id}").status_code == 204
    code, err = clone(server, ro_path, url, tmp_path / "ro2")
    assert code != 0 and "Permission denied" in err
