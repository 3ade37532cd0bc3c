"""Host keys: the three types, created once, kept, and signing only as configured."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from gitserver.policy.errors import ConfigError
from gitserver.ssh import hostkeys


def test_missing_types_are_created_and_existing_keys_kept(tmp_path: Path) -> None:
    directory = tmp_path / "ssh"
    old = asyncssh.generate_private_key("ssh-ed25519")
    directory.mkdir()
    (directory / "ssh_host_ed25519_key").write_bytes(old.export_private_key())

    created = hostkeys.ensure_host_keys(directory)

    assert [p.name for p in created] == ["ssh_host_ecdsa_key", "ssh_host_rsa_key"]
    keys = hostkeys.load_host_keys(directory)
    assert sorted(k.get_algorithm() for k in keys) == [  # type: ignore[attr-defined]
        "ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert old.public_data in [k.public_data for k in keys]  # type: ignore[attr-defined]
    assert all(oct(os.stat(p).st_mode & 0o777) == "0o600" for p in created)
    assert hostkeys.ensure_host_keys(directory) == []
    assert not list(directory.glob("*.tmp"))


def test_rsa_host_key_never_signs_with_sha1_by_default(tmp_path: Path) -> None:
    from gitserver.policy.ssh_algorithms import DEFAULT_HOST_KEY_ALGORITHMS

    pairs = hostkeys.restrict_host_key_algorithms(hostkeys.load_host_keys(tmp_path),
                                                  DEFAULT_HOST_KEY_ALGORITHMS)
    offered = [alg for pair in pairs for alg in pair.host_key_algorithms]  # type: ignore[attr-defined]
    assert sorted(offered) == sorted([b"ecdsa-sha2-nistp256", b"ssh-ed25519",
                                      b"rsa-sha2-512", b"rsa-sha2-256"])


def test_no_key_left_for_the_allowed_algorithms_is_a_clear_error(tmp_path: Path) -> None:
    keys = [asyncssh.generate_private_key("ssh-ed25519")]
    with pytest.raises(ConfigError, match="ssh_host_key_algorithms: no host key can sign"):
        hostkeys.restrict_host_key_algorithms(keys, ["rsa-sha2-256"])


def test_daemon_start_completes_an_older_data_dir(tmp_path: Path) -> None:
    """A data dir made when init wrote only ed25519 gains ECDSA and RSA when the daemon starts."""
    from gitserver.config import load
    from gitserver.ssh.hostkeys import for_config

    cfg = load(environ={"GITSERVER_DATA_DIR": str(tmp_path)})
    cfg.host_key_dir.mkdir()
    old = asyncssh.generate_private_key("ssh-ed25519").export_private_key()
    (cfg.host_key_dir / "ssh_host_ed25519_key").write_bytes(old)

    pairs = for_config(cfg)

    assert sorted(p.name for p in cfg.host_key_dir.glob("ssh_host_*_key")) == [
        "ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
    offered = sorted(alg for pair in pairs for alg in pair.host_key_algorithms)  # type: ignore[attr-defined]
    assert offered == sorted([b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"rsa-sha2-512", b"rsa-sha2-256"])
    assert (cfg.host_key_dir / "ssh_host_ed25519_key").read_bytes() == old


def _sign(ca: Path, pub: Path, *, host: bool) -> Path:
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "host", "-n", "127.0.0.1",
                    *(["-h"] if host else []), str(pub)], check=True, capture_output=True)
    return pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub")


def test_host_certificates_are_presented_beside_their_keys(tmp_path: Path) -> None:
    import subprocess

    directory = tmp_path / "ssh"
    keys = hostkeys.load_host_keys(directory)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    for kind in ("ed25519", "rsa"):
        (certs_dir / f"{kind}.pub").write_bytes((directory / f"ssh_host_{kind}_key.pub").read_bytes())
    ed25519 = _sign(tmp_path / "ca", certs_dir / "ed25519.pub", host=True)
    rsa = _sign(tmp_path / "ca", certs_dir / "rsa.pub", host=True)
    certified = hostkeys.load_host_certificates([str(ed25519), str(rsa)], keys)
    pairs = hostkeys.restrict_host_key_algorithms(keys, ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256",
                                                         "ecdsa-sha2-nistp256"], certified)
    offered = [alg for pair in pairs for alg in pair.host_key_algorithms]
    assert sorted(offered) == sorted([b"ssh-ed25519", b"ssh-ed25519-cert-v01@openssh.com",
                                      b"ecdsa-sha2-nistp256", b"rsa-sha2-512", b"rsa-sha2-256",
                                      b"rsa-sha2-512-cert-v01@openssh.com", b"rsa-sha2-256-cert-v01@openssh.com"])
    user_cert = _sign(tmp_path / "ca", certs_dir / "ed25519.pub", host=False)
    with pytest.raises(ConfigError, match="not an OpenSSH host certificate"):
        hostkeys.load_host_certificates([str(user_cert)], keys)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    stranger = _sign(tmp_path / "ca", tmp_path / "stranger.pub", host=True)
    with pytest.raises(ConfigError, match="certifies none of the host keys"):
        hostkeys.load_host_certificates([str(stranger)], keys)
    with pytest.raises(ConfigError, match="cannot read"):
        hostkeys.load_host_certificates([str(tmp_path / "missing-cert.pub")], keys)
