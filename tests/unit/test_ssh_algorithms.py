"""The SSH algorithm lists: OpenSSH 9's defaults, no repeats, operator lists checked."""

from __future__ import annotations

import pytest

from gitserver.config import load
from gitserver.policy import ssh_algorithms as algorithms
from gitserver.policy.errors import ConfigError
from gitserver.policy.ssh_algorithms import algorithm_options
from gitserver.policy.ssh_algorithms import of_config as ssh_algorithms_of


@pytest.mark.parametrize(("configured", "default", "available", "expected"), [
    # the built-in default is trimmed to what this asyncssh implements
    (("a", "b", "c"), ("a", "b", "c"), ("c", "a"), ["a", "c"]),
    # an operator's list is kept in its order, repeats dropped
    (("c", "a", "c"), ("a", "b"), ("a", "c"), ["c", "a"]),
])
def test_select(configured: tuple[str, ...], default: tuple[str, ...],
                available: tuple[str, ...], expected: list[str]) -> None:
    assert algorithms.select("ssh_x", configured, default, available) == expected


@pytest.mark.parametrize(("configured", "default", "available", "problem"), [
    (("a", "zz"), ("a",), ("a",), "setting ssh_x: unsupported algorithm 'zz'"),
    ((), ("a",), ("a",), "setting ssh_x: give at least one algorithm"),
    (("a",), ("a",), ("b",), "setting ssh_x: give at least one algorithm"),
])
def test_select_refuses(configured: tuple[str, ...], default: tuple[str, ...],
                        available: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        algorithms.select("ssh_x", configured, default, available)


def test_defaults_have_no_repeats_and_follow_openssh_9() -> None:
    algs = ssh_algorithms_of(load(environ={}))
    for offered in (algs.encryption, algs.kex, algs.mac, algs.host_key, algs.signature):
        assert len(offered) == len(set(offered))
    # AES-GCM first, AES-CTR after it (JSch 0.1.54 has no GCM)
    assert algs.encryption == ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                               "aes128-ctr", "aes192-ctr", "aes256-ctr"]
    # nothing OpenSSH 9 dropped from its defaults
    legacy = {"diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1",
              "diffie-hellman-group-exchange-sha1", "rsa1024-sha1", "rsa2048-sha256"}
    assert not legacy & set(algs.kex)
    assert not [mac for mac in algs.mac if "md5" in mac or mac.endswith("@ssh.com")]
    assert "ssh-rsa" not in algs.host_key and "ssh-dss" not in algs.signature
    assert {"curve25519-sha256", "ecdh-sha2-nistp256",
            "diffie-hellman-group-exchange-sha256"} <= set(algs.kex)
    assert "hmac-sha2-256" in algs.mac  # what JSch 0.1.54 uses with AES-CTR


def _has_mlkem() -> bool:
    from asyncssh.kex import get_kex_algs

    return b"mlkem768x25519-sha256" in get_kex_algs()


@pytest.mark.skipif(not _has_mlkem(), reason="this asyncssh build has no ML-KEM (crypto library)")
def test_post_quantum_key_exchange_is_kept_when_asyncssh_has_it() -> None:
    assert algorithm_options(load(environ={}))["kex_algs"][0] == "mlkem768x25519-sha256"


def test_signature_list_is_passed_explicitly_without_repeats() -> None:
    """asyncssh's own default names each algorithm twice in server-sig-algs (libgit2 crash)."""
    options = algorithm_options(load(environ={}))
    assert options["signature_algs"] == list(algorithms.DEFAULT_PUBKEY_ALGORITHMS)
