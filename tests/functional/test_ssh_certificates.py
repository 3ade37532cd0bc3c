"""SSH certificates end to end (docs/certificates.md): CAs and certificates made by the real
``ssh-keygen -s``, the real OpenSSH client with ``CertificateFile`` and ``@cert-authority``, a
KRL made by ``ssh-keygen -k``, on SQLite and PostgreSQL.

One private server per backend trusts a site CA (``GITSERVER_SSH_USER_CA_KEYS``), reads a
revocation file (``GITSERVER_SSH_REVOKED_KEYS``) and presents a host certificate
(``GITSERVER_SSH_HOST_CERTIFICATES``); tenant CAs are added through the API.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitserver.ssh.certauth import RECHECK_AFTER
from tests.conftest import wait_for
from tests.functional.certificates import Ca, Holder, git, issue, keygen, new_key, refused, ssh
from tests.functional.conftest import GitServer, make_repo, unique

API = "/api/v1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def certified(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              git_env: dict[str, str]) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp(f"certs-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'data' / 'gitserver.db'}"
    else:
        db_url = request.getfixturevalue("pg_cluster").create_database()
    cas = root / "cas"
    site_ca, host_ca = Ca.new(cas, "site-ca"), Ca.new(cas, "host-ca")
    # The host key exists before init (which keeps it), so its certificate can be configured.
    host_dir = root / "data" / "ssh"
    host_dir.mkdir(parents=True)
    host_key = new_key(host_dir, "ssh_host_ed25519_key")
    host_cert = host_ca.sign(host_key, principals="127.0.0.1", key_id="gitserver host", host=True,
                             validity="-5m:+1d")
    revoked = root / "revoked"
    revoked.write_text("")
    env = {"GITSERVER_SSH_USER_CA_KEYS": str(site_ca.path.with_suffix(".pub")),
           "GITSERVER_SSH_REVOKED_KEYS": str(revoked),
           "GITSERVER_SSH_HOST_CERTIFICATES": str(host_cert)}
    srv = GitServer(root / "data", db_url, git_env, extra_env=env)
    srv.site_ca, srv.host_ca, srv.revoked_file, srv.work = site_ca, host_ca, revoked, root  # type: ignore[attr-defined]
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def tenant_ca(srv: GitServer, tenant: str, name: str = "tenant-ca") -> tuple[Ca, int]:
    ca = Ca.new(Path(tempfile.mkdtemp(dir=srv.work)), name)  # type: ignore[attr-defined]
    resp = srv.api("POST", f"{API}/tenants/{tenant}/ssh-cas", json={"key": ca.public, "title": name})
    assert resp.status_code == 201, resp.text
    return ca, resp.json()["id"]


def add_principal(srv: GitServer, tenant: str, user: str, principal: str, token: str | None = None) -> int:
    return srv.api("POST", f"{API}/tenants/{tenant}/users/{user}/principals", json={"principal": principal},
                   token=token).status_code


def user_with_principal(srv: GitServer, tenant: str) -> tuple[str, str]:
    user = srv.new_user(tenant)
    principal = unique("p")
    assert add_principal(srv, tenant, user.name, principal) == 201
    return user.name, principal


def keys_dir(srv: GitServer) -> Path:
    return Path(tempfile.mkdtemp(dir=srv.work))  # type: ignore[attr-defined]


def greeted_as(result: subprocess.CompletedProcess[str], tenant: str, user: str) -> bool:
    return result.returncode == 0 and f"as {tenant}/{user};" in result.stdout


def test_a_tenant_ca_certificate_logs_in_and_its_push_records_the_certificate(
        certified: GitServer, tmp_path: Path) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    repo = certified.new_repo(tenant, grants={name: "write"})
    ca, _ = tenant_ca(certified, tenant)
    holder = issue(ca, keys_dir(certified), "alice", principals=principal, key_id="alice@corp", serial=4242)
    assert greeted_as(ssh(certified, holder), tenant, name)
    work = make_repo(tmp_path / "w", certified.git_env)
    git(certified, holder, "push", certified.repo_url(tenant, repo), "main", cwd=work)
    pushes = certified.api("GET", f"{API}/tenants/{tenant}/repos/{repo}/pushes").json()["items"]
    fingerprint = keygen("-lf", str(ca.path.with_suffix(".pub"))).stdout.split()[1]
    assert pushes[0]["user"] == name
    assert pushes[0]["certificate"] == {"ca": fingerprint, "key_id": "alice@corp", "serial": 4242}
    with certified.db() as session:  # what the push webhook's pusher.certificate shows
        from gitserver.db import models

        row = session.get(models.Push, pushes[0]["id"])
        assert row is not None and row.certificate == pushes[0]["certificate"]
    key_fingerprint = keygen("-lf", str(holder.key.with_suffix(".pub"))).stdout.split()[1]
    assert pushes[0]["key_fingerprint"] == key_fingerprint


def test_the_plain_key_path_is_unchanged(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    user = certified.new_user(tenant)
    repo = certified.new_repo(tenant, grants={user.name: "read"})
    assert certified.git(user, "ls-remote", certified.repo_url(tenant, repo)).returncode == 0
    pushes = certified.api("GET", f"{API}/tenants/{tenant}/repos/{repo}/pushes").json()["items"]
    assert pushes == []
    assert f"as {tenant}/{user.name};" in certified.ssh(user).stdout


def test_certificates_that_must_not_log_in(certified: GitServer) -> None:
    tenant, other = certified.new_tenant(), certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    second, second_principal = user_with_principal(certified, tenant)
    _stranger, stranger_principal = user_with_principal(certified, other)
    ca, _ = tenant_ca(certified, tenant)
    untrusted = Ca.new(keys_dir(certified), "nobodys-ca")
    where = keys_dir(certified)
    good = issue(ca, where, "good", principals=principal)
    assert greeted_as(ssh(certified, good), tenant, name)  # the control: the same CA works
    cases = {
        "expired": issue(ca, where, "expired", principals=principal, validity="-2d:-1d"),
        "not yet valid": issue(ca, where, "future", principals=principal, validity="+1d:+2d"),
        "wrong CA": issue(untrusted, where, "wrong", principals=principal),
        "host certificate": issue(ca, where, "host", principals=principal, host=True),
        "source-address": issue(ca, where, "elsewhere", principals=principal,
                                options=("source-address=10.9.8.7/32",)),
        "unknown critical option": issue(ca, where, "critical", principals=principal,
                                         options=("critical:verify-nothing@example.com=yes",)),
        "force-command": issue(ca, where, "forced", principals=principal, options=("force-command=ls",)),
        "no principals": issue(ca, where, "anyone", principals=None),
        "principal of another tenant": issue(ca, where, "stranger", principals=stranger_principal),
        "principal naming nobody": issue(ca, where, "nobody", principals=unique("nobody")),
        "two principals, two users": issue(ca, where, "two", principals=f"{principal},{second_principal}"),
    }
    for case, holder in cases.items():
        result = ssh(certified, holder)
        assert refused(result), f"{case}: {result.returncode} {result.stdout} {result.stderr}"
    logs = "".join(p.read_text(errors="replace") for p in certified.log_dir.glob("*.log"))
    for reason in ("not trusted", "force-command", "no principal of the certificate names a user",
                   "principals name 2 different users", "a critical option other than"):
        assert reason in logs, reason
    # The same key with a certificate naming only one of the two users does log in.
    assert greeted_as(ssh(certified, issue(ca, where, "one", principals=second_principal)), tenant, second)


def test_a_site_ca_names_users_of_every_tenant_and_principals_are_unique_site_wide(
        certified: GitServer) -> None:
    one, two = certified.new_tenant(), certified.new_tenant()
    name, principal = user_with_principal(certified, two)
    other = certified.new_user(one)
    assert add_principal(certified, one, other.name, principal) == 409
    assert add_principal(certified, two, name, principal) == 409
    site_ca: Ca = certified.site_ca  # type: ignore[attr-defined]
    holder = issue(site_ca, keys_dir(certified), "site", principals=principal)
    assert greeted_as(ssh(certified, holder), two, name)
    # A tenant CA of tenant one cannot name tenant two's user, even with the same principal.
    ca, _ = tenant_ca(certified, one)
    assert refused(ssh(certified, issue(ca, keys_dir(certified), "reach", principals=principal)))


def test_revocation_through_the_api_by_serial_and_by_key_id(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    ca, ca_id = tenant_ca(certified, tenant)
    where = keys_dir(certified)
    by_serial = issue(ca, where, "serial", principals=principal, serial=77)
    by_id = issue(ca, where, "id", principals=principal, key_id="laptop-2026", serial=78)
    kept = issue(ca, where, "kept", principals=principal, serial=79)
    for holder in (by_serial, by_id, kept):
        assert greeted_as(ssh(certified, holder), tenant, name)
    revoked = f"{API}/tenants/{tenant}/ssh-cas/{ca_id}/revoked"
    assert certified.api("POST", revoked, json={"serial": 77}).status_code == 201
    assert certified.api("POST", revoked, json={"key_id": "laptop-2026"}).status_code == 201
    assert certified.api("POST", revoked, json={"serial": 77}).status_code == 409
    assert refused(ssh(certified, by_serial)) and refused(ssh(certified, by_id))
    assert greeted_as(ssh(certified, kept), tenant, name)
    listed = certified.api("GET", revoked).json()["items"]
    assert [(r["serial"], r["key_id"]) for r in listed] == [(77, None), (None, "laptop-2026")]


def test_a_krl_file_revokes_and_is_read_again_when_it_changes(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    plain = certified.new_user(tenant)
    site_ca: Ca = certified.site_ca  # type: ignore[attr-defined]
    where = keys_dir(certified)
    doomed = issue(site_ca, where, "doomed", principals=principal, serial=5001)
    spared = issue(site_ca, where, "spared", principals=principal, serial=5002)
    assert greeted_as(ssh(certified, doomed), tenant, name)
    revoked_file: Path = certified.revoked_file  # type: ignore[attr-defined]
    spec = where / "spec"
    spec.write_text(f"serial: 5001\n{Path(str(plain.key_path) + '.pub').read_text()}")
    made = where / "krl"
    keygen("-k", "-f", str(made), "-s", str(site_ca.path.with_suffix(".pub")), str(spec))
    try:
        made.replace(revoked_file)  # an atomic replace, as an operator's tooling would do
        wait_for(lambda: refused(ssh(certified, doomed)), timeout=10, what="the KRL to be read")
        assert greeted_as(ssh(certified, spared), tenant, name)
        assert refused(certified.ssh(plain))  # a KRL revokes plain keys too
    finally:
        revoked_file.write_text("")
    wait_for(lambda: greeted_as(ssh(certified, doomed), tenant, name), timeout=10,
             what="the emptied file to be read")


def test_a_ca_removed_while_its_certificate_is_valid(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    repo = certified.new_repo(tenant, grants={name: "read"})
    ca, ca_id = tenant_ca(certified, tenant)
    holder = issue(ca, keys_dir(certified), "removed", principals=principal)
    control = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp")) / "s"
    mux = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
    command = f"git-upload-pack '{tenant}/{repo}'"
    try:
        first = ssh(certified, holder, command, host_options=mux)
        assert first.stdout == "0000", first.stderr
        assert certified.api("DELETE", f"{API}/tenants/{tenant}/ssh-cas/{ca_id}").status_code == 204
        time.sleep(RECHECK_AFTER)  # a command right after the login is not checked again
        # The connection that is still open refuses its next command, saying why ...
        again = ssh(certified, holder, command, host_options=mux)
        assert again.returncode == 128 and "no longer valid" in again.stderr, again.stderr
    finally:
        subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "-p", str(certified.ssh_port),
                        "git@127.0.0.1"], capture_output=True, timeout=30)
    # ... and a new login is refused.
    assert refused(ssh(certified, holder))


def test_the_host_certificate_is_verified_with_cert_authority(certified: GitServer, tmp_path: Path) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    site_ca: Ca = certified.site_ca  # type: ignore[attr-defined]
    holder = issue(site_ca, keys_dir(certified), "hostcheck", principals=principal)
    host_ca: Ca = certified.host_ca  # type: ignore[attr-defined]
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority [127.0.0.1]:{certified.ssh_port} {host_ca.public}\n")
    strict = ("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}")
    assert greeted_as(ssh(certified, holder, host_options=strict), tenant, name)
    # The control: a known_hosts trusting another CA does not let the client in.
    known.write_text(f"@cert-authority [127.0.0.1]:{certified.ssh_port} {site_ca.public}\n")
    result = ssh(certified, holder, host_options=strict)
    assert result.returncode == 255 and "Host key verification failed" in result.stderr, result.stderr


def test_the_api_validates_and_guards_cas_and_principals(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    member = certified.new_user(tenant)
    admin = certified.new_user(tenant, role="admin")
    cas = f"{API}/tenants/{tenant}/ssh-cas"
    bad = certified.api("POST", cas, json={"key": "ssh-ed25519 not-base64!"})
    assert bad.status_code == 400 and "key" in bad.text
    ca, ca_id = tenant_ca(certified, tenant)
    assert certified.api("POST", cas, json={"key": ca.public}).status_code == 409
    assert certified.api("POST", cas, json={"key": ca.public}, token=member.token).status_code == 403
    assert [c["id"] for c in certified.api("GET", cas, token=admin.token).json()["items"]] == [ca_id]
    revoked = f"{cas}/{ca_id}/revoked"
    for body in ({"serial": 0}, {"serial": 1, "key_id": "x"}, {}, {"key_id": ""}, {"serial": "7"}):
        assert certified.api("POST", revoked, json=body).status_code == 400, body
    principals = f"{API}/tenants/{tenant}/users/{member.name}/principals"
    assert add_principal(certified, tenant, member.name, "has space") == 400
    assert add_principal(certified, tenant, member.name, "a,b") == 400
    # A user never names their own principals (that would be logging in as someone else).
    assert add_principal(certified, tenant, member.name, unique("mine"), token=member.token) == 403
    chosen = unique("given")
    assert add_principal(certified, tenant, member.name, chosen, token=admin.token) == 201
    mine = certified.api("GET", principals, token=member.token).json()["items"]
    assert [p["principal"] for p in mine] == [chosen]
    assert certified.api("DELETE", f"{principals}/{chosen}", token=member.token).status_code == 403
    assert certified.api("DELETE", f"{principals}/{chosen}", token=admin.token).status_code == 204
    assert certified.api("DELETE", f"{principals}/{chosen}", token=admin.token).status_code == 404
    assert certified.api("DELETE", f"{cas}/{ca_id}").status_code == 204
    assert certified.api("GET", f"{cas}/{ca_id}").status_code == 404


def test_a_removed_principal_record_stops_the_certificate(certified: GitServer) -> None:
    tenant = certified.new_tenant()
    name, principal = user_with_principal(certified, tenant)
    ca, _ = tenant_ca(certified, tenant)
    holder: Holder = issue(ca, keys_dir(certified), "unbound", principals=principal)
    assert greeted_as(ssh(certified, holder), tenant, name)
    path = f"{API}/tenants/{tenant}/users/{name}/principals/{principal}"
    assert certified.api("DELETE", path).status_code == 204
    assert refused(ssh(certified, holder))
