"""Configuration precedence: defaults < TOML file < environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitserver.config import Config, load
from gitserver.policy.errors import ConfigError
from gitserver.policy.values import MaxStartups, parse_max_startups


def test_defaults() -> None:
    cfg = load(environ={})
    assert cfg.ssh_port == 2222 and cfg.http_port == 8080
    assert cfg.data_dir == Path("./var").absolute()
    assert cfg.effective_database_url == f"sqlite:///{cfg.data_dir / 'gitserver.db'}"
    assert cfg.ssh_base_url == "ssh://git@127.0.0.1:2222"
    assert cfg.allow_private_networks is False


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "gitserver.toml"
    path.write_text('ssh_port = 3000\nhttp_port = 3001\n[ssh]\nmax_connections = 7\n')
    cfg = load(path, environ={"GITSERVER_HTTP_PORT": "4001", "GITSERVER_ALLOW_PRIVATE_NETWORKS": "on"})
    assert (cfg.ssh_port, cfg.http_port, cfg.ssh_max_connections) == (3000, 4001, 7)
    assert cfg.allow_private_networks is True


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('data_dir = "/srv/git"\nssh_ciphers = ["aes256-gcm@openssh.com"]\n')
    cfg = load(environ={"GITSERVER_CONFIG": str(path)})
    assert cfg.data_dir == Path("/srv/git")
    assert cfg.ssh_ciphers == ("aes256-gcm@openssh.com",)


@pytest.mark.parametrize(("content", "message"), [
    ("nope = 1\n", "unknown setting 'nope'"),
    ("ssh_port = 'x'\n", "setting ssh_port"),
    ("ssh_port = \n", "config file"),
])
def test_bad_file_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(path, environ={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GITSERVER_SSH_PORT"):
        load(environ={"GITSERVER_SSH_PORT": "twenty"})
    with pytest.raises(ConfigError, match="GITSERVER_ALLOW_PRIVATE_NETWORKS"):
        load(environ={"GITSERVER_ALLOW_PRIVATE_NETWORKS": "maybe"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "missing.toml", environ={})


def test_public_urls_override() -> None:
    cfg = load(environ={"GITSERVER_PUBLIC_SSH_URL": "ssh://git@git.example.com/",
                        "GITSERVER_PUBLIC_HTTP_URL": "https://git.example.com"})
    assert cfg.ssh_base_url == "ssh://git@git.example.com"
    assert cfg.http_base_url == "https://git.example.com"
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("setting, value, problem", [
    ("ciphers", "[]", "ssh_ciphers: give at least one algorithm"),
    ("ciphers", '["aes128-gcm@openssh.com", "rot13"]', "ssh_ciphers: unsupported algorithm 'rot13'"),
    ("kex_algorithms", '["diffie-hellman-group1-sha2"]', "ssh_kex_algorithms: unsupported"),
    ("macs", '["hmac-sha3"]', "ssh_macs: unsupported algorithm 'hmac-sha3'"),
    ("host_key_algorithms", '["ssh-dsa"]', "ssh_host_key_algorithms: unsupported"),
    ("pubkey_algorithms", "[]", "ssh_pubkey_algorithms: give at least one"),
])
def test_algorithm_lists_are_checked_at_start(tmp_path: Path, setting: str, value: str,
                                              problem: str) -> None:
    path = tmp_path / "gitserver.toml"
    path.write_text(f"[ssh]\n{setting} = {value}\n")
    with pytest.raises(ConfigError, match=problem):
        load(path, environ={})


def test_daemon_offers_exactly_the_configured_ciphers() -> None:
    from gitserver.policy.ssh_algorithms import algorithm_options

    cfg = load(environ={"GITSERVER_SSH_CIPHERS": "aes256-ctr,aes128-gcm@openssh.com,aes256-ctr"})
    assert algorithm_options(cfg)["encryption_algs"] == ["aes256-ctr", "aes128-gcm@openssh.com"]


@pytest.mark.parametrize("text, parsed", [
    ("10:30:100", MaxStartups(10, 30, 100)),
    (" 10 : 30 : 100 ", MaxStartups(10, 30, 100)),
    ("50", MaxStartups(50, 100, 50)),  # a bare number is a hard cap, as in sshd
    ("0", MaxStartups(0, 100, 0)),  # no cap
    ("5:100:5", MaxStartups(5, 100, 5)),
])
def test_max_startups_as_openssh_spells_it(text: str, parsed: MaxStartups) -> None:
    assert parse_max_startups(text) == parsed


@pytest.mark.parametrize("value, message", [
    ("10:30", "expected start:rate:full"),
    ("ten", "expected start:rate:full"),
    ("10:0:100", "a percentage, 1 to 100"),
    ("10:101:100", "a percentage, 1 to 100"),
    ("100:30:10", "expected start <= full and full >= 1"),
    ("0:30:0", "expected start <= full and full >= 1"),
])
def test_bad_max_startups_names_the_setting(value: str, message: str) -> None:
    for env in ("GITSERVER_SSH_MAX_STARTUPS", "GITSERVER_SSH_PER_SOURCE_MAX_STARTUPS"):
        with pytest.raises(ConfigError) as info:
            load(environ={env: value})
        assert env.removeprefix("GITSERVER_").lower() in info.value.message
        assert message in info.value.message


def test_max_startups_from_a_toml_number_is_a_hard_cap(tmp_path: Path) -> None:
    """Files written when these settings were plain numbers keep their meaning."""
    path = tmp_path / "gitserver.toml"
    path.write_text("[ssh]\nmax_startups = 100\nper_source_max_startups = 50\n")
    cfg = load(path, environ={})
    assert parse_max_startups(cfg.ssh_max_startups) == MaxStartups(100, 100, 100)
    assert parse_max_startups(cfg.ssh_per_source_max_startups) == MaxStartups(50, 100, 50)


def test_negative_connection_caps_are_refused() -> None:
    with pytest.raises(ConfigError, match="ssh_max_connections_per_user"):
        load(environ={"GITSERVER_SSH_MAX_CONNECTIONS_PER_USER": "-1"})


def test_pipeline_log_retention_days_is_read_and_checked() -> None:
    assert load(environ={}).pipeline_log_retention_days == 0
    assert load(environ={"GITSERVER_PIPELINE_LOG_RETENTION_DAYS": "30"}).pipeline_log_retention_days == 30
    with pytest.raises(ConfigError, match="pipeline_log_retention_days"):
        load(environ={"GITSERVER_PIPELINE_LOG_RETENTION_DAYS": "-1"})
