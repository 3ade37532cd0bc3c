"""gitserver.identity.krl against OpenSSH itself: KRLs made by ``ssh-keygen -k`` from every kind
of revocation spec, and for each certificate and key the answer ``ssh-keygen -Q`` gives."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from gitserver.identity import certs, krl


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=False)


def new_key(directory: Path, name: str) -> Path:
    path = directory / name
    keygen("-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path))
    return path


def sign(ca: Path, key: Path, *, serial: int, key_id: str, principals: str = "alice") -> Path:
    result = keygen("-q", "-s", str(ca), "-I", key_id, "-n", principals, "-z", str(serial),
                    str(key.with_suffix(".pub")))
    assert result.returncode == 0, result.stderr
    return key.parent / f"{key.name}-cert.pub"


def blob_of(pub: Path) -> bytes:
    return base64.b64decode(pub.read_text().split()[1])


def openssh_says_revoked(krl_path: Path, pub: Path) -> bool:
    result = keygen("-Q", "-f", str(krl_path), str(pub))
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 1  # ssh-keygen -Q exits 1 when a key is revoked


def ours_says_revoked(revoked: krl.Revoked, pub: Path) -> bool:
    blob = blob_of(pub)
    if certs.is_certificate(blob):
        cert = certs.decode(blob)
        return (revoked.certificate_revoked(cert.ca_blob, cert.serial, cert.key_id)
                or revoked.key_revoked(cert.key_blob) or revoked.key_revoked(cert.ca_blob))
    return revoked.key_revoked(blob)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    ca, other_ca = new_key(tmp_path, "ca"), new_key(tmp_path, "other-ca")
    made = {"ca": ca, "other_ca": other_ca}
    for serial, key_id in ((5, "five"), (7, "seven"), (40, "forty"), (1000, "range"), (0, "zero"),
                           (3, "by-id")):
        key = new_key(tmp_path, f"user{serial}")
        made[f"cert{serial}"] = sign(ca, key, serial=serial, key_id=key_id)
        made[f"other{serial}"] = sign(other_ca, new_key(tmp_path, f"o{serial}"), serial=serial, key_id=key_id)
    made["plain"] = new_key(tmp_path, "plain").with_suffix(".pub")
    made["hashed"] = new_key(tmp_path, "hashed").with_suffix(".pub")
    made["innocent"] = new_key(tmp_path, "innocent").with_suffix(".pub")
    return made


def test_every_revocation_kind_agrees_with_ssh_keygen(tmp_path: Path, world: dict[str, Path]) -> None:
    spec = tmp_path / "spec"
    # serial list, serial range, a run that ssh-keygen encodes as a bitmap, key ids under one
    # CA, plain keys, hashes.
    spec.write_text("serial: 5\nserial: 7\nserial: 900-1100\nserial: 40\nserial: 42\nserial: 44\n"
                    "id: by-id\n")
    krl_path = tmp_path / "krl"
    made = keygen("-k", "-f", str(krl_path), "-s", str(world["ca"].with_suffix(".pub")), str(spec))
    assert made.returncode == 0, made.stderr
    extra = tmp_path / "extra"
    sha = base64.b64encode(hashlib.sha256(blob_of(world["hashed"])).digest()).decode().rstrip("=")
    extra.write_text(f"{world['plain'].read_text()}\nhash: SHA256:{sha}\n")
    assert keygen("-k", "-u", "-f", str(krl_path), str(extra)).returncode == 0

    revoked = krl.parse_krl(krl_path.read_bytes())
    checked = {}
    for name, pub in world.items():
        if name in ("ca", "other_ca"):
            continue
        checked[name] = openssh_says_revoked(krl_path, pub)
        assert ours_says_revoked(revoked, pub) == checked[name], name
    # The cases the spec meant to cover really came out both ways.
    assert checked["cert5"] and checked["cert7"] and checked["cert1000"] and checked["cert3"]
    assert checked["cert40"] and not checked["other40"]  # a serial of one CA only
    assert not checked["other5"] and not checked["cert0"] and not checked["innocent"]
    assert checked["plain"] and checked["hashed"]


def test_serial_zero_is_never_revoked_by_serial(world: dict[str, Path]) -> None:
    """ssh-keygen refuses to write serial 0 into a KRL; a KRL written by another tool may
    hold a range from 0, and sshd ignores serial 0 even then."""
    cert = certs.decode(blob_of(world["cert0"]))
    revoked = krl.Revoked()
    revoked.by_ca[cert.ca_blob] = krl._CaRevocations(serials={0}, ranges=[(0, 10)])
    assert not revoked.certificate_revoked(cert.ca_blob, cert.serial, cert.key_id)
    five = certs.decode(blob_of(world["cert5"]))
    assert revoked.certificate_revoked(five.ca_blob, five.serial, five.key_id)
    revoked.by_ca[krl.ANY_CA] = krl._CaRevocations(key_ids={"zero"})  # a CA-less key id section
    assert revoked.certificate_revoked(cert.ca_blob, cert.serial, cert.key_id)


def test_a_key_list_and_its_errors(tmp_path: Path, world: dict[str, Path]) -> None:
    text = f"# revoked\n\n{world['plain'].read_text()}"
    revoked = krl.parse_revoked(text.encode())
    assert revoked.key_revoked(blob_of(world["plain"])) and not revoked.key_revoked(blob_of(world["innocent"]))
    with pytest.raises(krl.KrlError, match="line 2 is not an OpenSSH public key"):
        krl.parse_revoked(b"# fine\nnot a key\n")
    with pytest.raises(krl.KrlError, match="truncated"):
        krl.parse_krl(krl.KRL_MAGIC + b"\x00\x00\x00\x01")
    with pytest.raises(krl.KrlError, match="neither"):
        krl.parse_revoked(b"\xff\xfe\x00garbage")


def test_the_file_is_read_again_when_it_changes_and_refuses_all_when_unreadable(
        tmp_path: Path, world: dict[str, Path]) -> None:
    path = tmp_path / "revoked"
    path.write_text("")
    watched = krl.RevocationFile(str(path))
    assert not watched.current().key_revoked(blob_of(world["plain"]))
    path.write_text(world["plain"].read_text())
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a later mtime for sure
    assert watched.current().key_revoked(blob_of(world["plain"]))
    path.write_text("garbage\n")
    with pytest.raises(krl.KrlError, match="line 1"):
        watched.current()
    path.unlink()
    with pytest.raises(krl.KrlError, match="cannot read"):
        watched.current()
    assert not krl.RevocationFile("").current().key_revoked(b"anything")


def test_a_broken_revocation_file_stops_the_daemon_at_start(tmp_path: Path) -> None:
    from gitserver.config import load
    from gitserver.policy.errors import ConfigError
    from gitserver.ssh.certlogin import Trust

    broken = tmp_path / "revoked"
    broken.write_text("not a key\n")
    config = load(environ={"GITSERVER_DATA_DIR": str(tmp_path), "GITSERVER_SSH_REVOKED_KEYS": str(broken)})
    with pytest.raises(ConfigError, match=r"ssh_revoked_keys: revoked keys file .* line 1"):
        Trust.from_config(config)
    missing = load(environ={"GITSERVER_DATA_DIR": str(tmp_path),
                            "GITSERVER_SSH_REVOKED_KEYS": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="cannot read"):
        Trust.from_config(missing)
