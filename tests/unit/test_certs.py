"""gitserver.identity.certs: decoding ``ssh-keygen -s`` certificates with asyncssh, the refusals,
and the choice of the one user a certificate's principals name (a table)."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from pathlib import Path

import pytest

from gitserver.identity import certs
from gitserver.identity.certs import CertificateRefused, PrincipalRecord
from gitserver.policy.errors import ConfigError, InvalidInput

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def certificate(tmp_path: Path, *extra: str, host: bool = False) -> bytes:
    if not (tmp_path / "ca").exists():
        keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca"))
    key = tmp_path / f"user{len(list(tmp_path.iterdir()))}"
    keygen("-t", "ed25519", "-N", "", "-f", str(key))
    keygen("-s", str(tmp_path / "ca"), "-I", "alice@corp", "-z", "4242", *(["-h"] if host else []),
           *extra, str(key.with_suffix(".pub")))
    return base64.b64decode(Path(f"{key}-cert.pub").read_text().split()[1])


def test_decode_reads_what_ssh_keygen_wrote(tmp_path: Path) -> None:
    blob = certificate(tmp_path, "-n", "alice,ops", "-V", "20260101000000:20270101000000",
                       "-O", "source-address=127.0.0.1/32")
    assert certs.is_certificate(blob)
    cert = certs.decode(blob)
    assert (cert.cert_type, cert.serial, cert.key_id) == (certs.CERT_TYPE_USER, 4242, "alice@corp")
    assert cert.principals == ("alice", "ops")
    assert cert.valid_after == int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
    assert certs.SOURCE_ADDRESS in cert.options
    ca_line = (tmp_path / "ca.pub").read_text().split()
    assert cert.ca_blob == base64.b64decode(ca_line[1])
    assert certs.refusal(cert, NOW) is None
    assert not certs.is_certificate(base64.b64decode(ca_line[1]))


@pytest.mark.parametrize(("extra", "host", "reason"), [
    (("-n", "alice", "-V", "20250101:20260101"), False, "expired"),
    (("-n", "alice", "-V", "20270101:20280101"), False, "not valid yet"),
    (("-V", "-1d:+1d"), False, "no principals"),
    (("-n", "alice", "-O", "force-command=ls"), False, "force-command"),
    (("-n", "alice"), True, "host certificate"),
])
def test_refusals(tmp_path: Path, extra: tuple[str, ...], host: bool, reason: str) -> None:
    cert = certs.decode(certificate(tmp_path, *extra, host=host))
    assert reason in (certs.refusal(cert, NOW) or "")


def test_an_unknown_critical_option_is_refused_at_decoding(tmp_path: Path) -> None:
    blob = certificate(tmp_path, "-n", "alice", "-O", "critical:frobnicate@example.com=1")
    with pytest.raises(CertificateRefused, match="critical option"):
        certs.decode(blob)


ALICE, BOB, CAROL = 1, 2, 3
T1, T2 = 10, 20
RECORDS = [PrincipalRecord("alice", ALICE, T1), PrincipalRecord("bob", BOB, T1),
           PrincipalRecord("carol", CAROL, T2)]


@pytest.mark.parametrize(("principals", "site", "tenants", "expected"), [
    (["alice"], False, [T1], ALICE),
    (["alice", "nobody"], False, [T1], ALICE),  # names nobody else: still alice
    (["alice", "alice"], False, [T1], ALICE),
    (["carol"], False, [T1], "no principal"),  # another tenant's user
    (["carol"], True, [], CAROL),  # a site CA vouches in every tenant
    (["carol"], False, [T1, T2], CAROL),  # a CA two tenants trust
    (["nobody"], True, [], "no principal"),
    (["alice", "bob"], False, [T1], "2 different users"),
    (["alice", "carol"], True, [], "2 different users"),
    (["alice", "carol"], False, [T1], ALICE),  # carol is outside the CA's scope
    (["ALICE"], False, [T1], "no principal"),  # exact match only
    (["al*"], False, [T1], "no principal"),  # never a pattern
])
def test_choose_user(principals: list[str], site: bool, tenants: list[int], expected: int | str) -> None:
    if isinstance(expected, int):
        assert certs.choose_user(principals, RECORDS, site_ca=site, ca_tenants=tenants) == expected
    else:
        with pytest.raises(CertificateRefused, match=expected):
            certs.choose_user(principals, RECORDS, site_ca=site, ca_tenants=tenants)


@pytest.mark.parametrize("bad", ["", "a b", "a,b", "x" * 256, "tab\there", 7, None, "é", "host/admin"])
def test_principal_names(bad: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        certs.validate_principal(bad)
    assert caught.value.field == "principal"
    assert certs.validate_principal("alice@corp.example") == "alice@corp.example"


def test_site_cas_from_files(tmp_path: Path) -> None:
    keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / "a"))
    keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / "b"))
    both = tmp_path / "both.pub"
    both.write_text(f"# the org's CAs\n{(tmp_path / 'a.pub').read_text()}\n{(tmp_path / 'b.pub').read_text()}")
    assert len(certs.load_site_cas([str(both)])) == 2
    broken = tmp_path / "broken.pub"
    broken.write_text("ssh-ed25519 AAAA\n")
    with pytest.raises(ConfigError, match=r"broken\.pub line 1"):
        certs.load_site_cas([str(broken)])
    with pytest.raises(ConfigError, match="cannot read"):
        certs.load_site_cas([str(tmp_path / "missing.pub")])
