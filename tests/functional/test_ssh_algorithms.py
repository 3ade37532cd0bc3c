"""What the daemon offers, as the real OpenSSH client sees it: three host key types, AES-GCM
and AES-CTR, OpenSSH 9's key exchanges and MACs, and a server-sig-algs list without repeats."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.functional.conftest import GitServer, User


@pytest.fixture
def user(server: GitServer) -> User:
    return server.new_user(server.new_tenant())


def test_three_host_key_types_are_offered(server: GitServer) -> None:
    result = subprocess.run(["ssh-keyscan", "-p", str(server.ssh_port), "-t", "ed25519,ecdsa,rsa",
                             "127.0.0.1"], capture_output=True, text=True, timeout=60)
    types = sorted(line.split()[1] for line in result.stdout.splitlines() if line.strip())
    assert types == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]


@pytest.mark.parametrize("options", [
    # what JSch 0.1.54 (Jenkins agents, Eclipse) can negotiate
    ("-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256", "-o", "Ciphers=aes128-ctr",
     "-o", "MACs=hmac-sha2-256", "-o", "KexAlgorithms=ecdh-sha2-nistp256"),
    ("-o", "HostKeyAlgorithms=rsa-sha2-512", "-o", "Ciphers=aes256-gcm@openssh.com"),
    ("-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "KexAlgorithms=diffie-hellman-group14-sha256"),
])
def test_older_algorithm_sets_connect(server: GitServer, user: User, options: tuple[str, ...]) -> None:
    result = server.ssh(user, options=options)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Hi {user.name}!")


@pytest.mark.parametrize("options", [
    ("-o", "KexAlgorithms=diffie-hellman-group14-sha1"),
    ("-o", "HostKeyAlgorithms=ssh-rsa"),
    ("-o", "Ciphers=aes128-cbc"),
    ("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-md5"),
])
def test_legacy_algorithms_are_not_offered(server: GitServer, user: User,
                                           options: tuple[str, ...]) -> None:
    result = server.ssh(user, options=("-v", *options))  # -v: the refusal is an INFO line
    assert result.returncode == 255
    assert "no matching" in result.stderr


def test_server_sig_algs_has_no_repeats(server: GitServer, user: User) -> None:
    result = server.ssh(user, options=("-v",))
    found = re.search(r"server-sig-algs=<([^>]*)>", result.stderr)
    assert found, result.stderr
    algs = found.group(1).split(",")
    assert len(algs) == len(set(algs))
    assert {"ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"} <= set(algs)


def test_rsa_user_key_may_sign_with_sha1_like_jsch(server: GitServer, user: User) -> None:
    """JSch before 0.1.55 signs with SHA-1 "ssh-rsa" only; that user-key signature is still
    accepted (last in server-sig-algs), while the host key never signs with SHA-1."""
    from gitserver.admin import keys, tenants, users

    key = server.keys_dir / f"{user.name}-rsa-sha1"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", str(key)],
                   check=True)
    with server.db() as session:
        row = users.get_user(session, tenants.get_tenant(session, user.tenant), user.name)
        keys.add_user_key(session, row, key.with_suffix(".pub").read_text().strip(), "rsa")
    result = server.ssh(key, options=("-o", "PubkeyAcceptedAlgorithms=ssh-rsa",
                                      "-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Hi {user.name}!")
