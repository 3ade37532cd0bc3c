"""gitserver.ssh.certlogin on a real database (SQLite and PostgreSQL), without sockets: which
user a certificate is, the scope of tenant CAs and of their revocations, the site CA, and the
re-check of a login that stays open. Certificates come from ``ssh-keygen -s``."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from gitserver.admin import ssh_cas, tenants, users
from gitserver.db.session import transaction
from gitserver.identity import certs, krl
from gitserver.identity.certs import CertificateRefused
from gitserver.identity.keys import fingerprint_of_blob
from gitserver.policy.errors import Forbidden
from gitserver.runtime import Runtime
from gitserver.ssh import certauth, certlogin


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        for name in ("ca", "site"):
            keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / name))
        self.count = 0

    def public(self, name: str) -> str:
        return (self.dir / f"{name}.pub").read_text().strip()

    def blob(self, name: str) -> bytes:
        return base64.b64decode(self.public(name).split()[1])

    def cert(self, ca: str, principals: str, serial: int = 1, key_id: str = "k") -> certs.Certificate:
        self.count += 1
        key = self.dir / f"user{self.count}"
        keygen("-t", "ed25519", "-N", "", "-f", str(key))
        keygen("-s", str(self.dir / ca), "-I", key_id, "-n", principals, "-z", str(serial),
               str(key.with_suffix(".pub")))
        return certs.decode(base64.b64decode(Path(f"{key}-cert.pub").read_text().split()[1]))


@pytest.fixture
def world(tmp_path: Path, runtime: Runtime) -> World:
    made = World(tmp_path)
    with transaction(runtime.sessions) as session:
        one, two = tenants.create_tenant(session, "one"), tenants.create_tenant(session, "two")
        alice, bob = users.create_user(session, one, "alice"), users.create_user(session, two, "bob")
        ssh_cas.add_principal(session, alice, "alice@corp")
        ssh_cas.add_principal(session, bob, "bob@corp")
        ssh_cas.add_ca(session, one, made.public("ca"))
    return made


def login(runtime: Runtime, trust: certlogin.Trust, cert: certs.Certificate) -> str:
    with transaction(runtime.sessions) as session:
        found = certlogin.identity_for_certificate(session, trust, cert)
    assert found.principal.certificate is not None and found.principal.key_id is None
    return found.principal.display


def test_scopes_of_tenant_and_site_cas(runtime: Runtime, world: World) -> None:
    tenant_only = certlogin.Trust({}, krl.RevocationFile(""))
    assert login(runtime, tenant_only, world.cert("ca", "alice@corp")) == "one/alice"
    with pytest.raises(CertificateRefused, match="no principal"):
        login(runtime, tenant_only, world.cert("ca", "bob@corp"))  # tenant two does not trust it
    with pytest.raises(CertificateRefused, match="not trusted"):
        login(runtime, tenant_only, world.cert("site", "alice@corp"))
    site = certlogin.Trust({fingerprint_of_blob(world.blob("site")): world.blob("site")}, krl.RevocationFile(""))
    assert login(runtime, site, world.cert("site", "bob@corp")) == "two/bob"
    with pytest.raises(CertificateRefused, match="2 different users"):
        login(runtime, site, world.cert("site", "alice@corp,bob@corp"))


def test_revocations_are_the_cas_own_and_a_disabled_user_is_refused(runtime: Runtime, world: World) -> None:
    trust = certlogin.Trust({}, krl.RevocationFile(""))
    with transaction(runtime.sessions) as session:
        one = tenants.get_tenant(session, "one")
        ca = session.scalars(ssh_cas.cas_query(one)).one()
        ssh_cas.revoke(session, ca, serial=9)
        ssh_cas.revoke(session, ca, key_id="lost laptop")
    with pytest.raises(CertificateRefused, match="revoked by its tenant"):
        login(runtime, trust, world.cert("ca", "alice@corp", serial=9))
    with pytest.raises(CertificateRefused, match="revoked by its tenant"):
        login(runtime, trust, world.cert("ca", "alice@corp", serial=10, key_id="lost laptop"))
    assert login(runtime, trust, world.cert("ca", "alice@corp", serial=10)) == "one/alice"
    with transaction(runtime.sessions) as session:
        users.disable_user(session, users.get_user(session, tenants.get_tenant(session, "one"), "alice"))
    with pytest.raises(CertificateRefused, match="disabled"):
        login(runtime, trust, world.cert("ca", "alice@corp", serial=11))


def test_a_login_that_stays_open_is_checked_again(runtime: Runtime, world: World) -> None:
    trust = certlogin.Trust({}, krl.RevocationFile(""))
    cert = world.cert("ca", "alice@corp")
    with transaction(runtime.sessions) as session:
        found = certlogin.identity_for_certificate(session, trust, cert)
    with transaction(runtime.sessions) as session:
        assert certauth.current_or_forbidden(session, trust, found).principal.user_id == found.principal.user_id
        one = tenants.get_tenant(session, "one")
        record = ssh_cas.get_principal(session, users.get_user(session, one, "alice"), "alice@corp")
        ssh_cas.remove_principal(session, record)
        ssh_cas.add_principal(session, users.create_user(session, one, "mallory"), "alice@corp")
    with transaction(runtime.sessions) as session, pytest.raises(Forbidden, match="another user"):
        certauth.current_or_forbidden(session, trust, found)
    with transaction(runtime.sessions) as session:
        ssh_cas.remove_ca(session, session.scalars(ssh_cas.cas_query(tenants.get_tenant(session, "one"))).one())
    with transaction(runtime.sessions) as session, pytest.raises(Forbidden, match="no longer valid"):
        certauth.current_or_forbidden(session, trust, found)
