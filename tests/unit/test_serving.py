"""One source for the API's gunicorn settings: ``gitserver api`` (serving.Application) and
``etc/gunicorn.conf.py`` run gunicorn with the same settings, from serving.settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig

from gitserver import config as config_mod
from gitserver.api import serving

ROOT = Path(__file__).resolve().parents[2]
ENVIRON = {"GITSERVER_HTTP_HOST": "::1", "GITSERVER_HTTP_PORT": "18080", "GITSERVER_HTTP_WORKERS": "3",
           "GITSERVER_HTTP_HEADER_TIMEOUT": "7", "GITSERVER_HTTP_READ_TIMEOUT": "11"}


def comparable(name: str, value: Any) -> Any:
    """A setting's value as gunicorn holds it; the worker class (a new subclass per call) by
    what it is made of."""
    if name == "worker_class":
        return (value.__mro__[1], value.header_timeout, value.read_timeout)
    return value


def gunicorn_values(cfg: GunicornConfig, names: list[str]) -> dict[str, Any]:
    return {name: comparable(name, cfg.settings[name].get()) for name in names if name in cfg.settings}


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"GITSERVER_DATA_DIR": str(tmp_path), **ENVIRON}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_the_conf_file_and_gitserver_api_run_gunicorn_with_the_same_settings(environ: dict[str, str]) -> None:
    import runpy

    conf = runpy.run_path(str(ROOT / "etc" / "gunicorn.conf.py"))
    expected = serving.settings(config_mod.load(environ=environ))
    names = sorted(expected)
    # What gunicorn makes of the file: it sets every name the file defines that it knows.
    from_file = GunicornConfig()
    for name in names:
        if name in from_file.settings:
            from_file.set(name, conf[name])
    in_process = serving.Application(config_mod.load(environ=environ), lambda: None).cfg  # type: ignore[arg-type,return-value]
    assert gunicorn_values(in_process, names) == gunicorn_values(from_file, names)
    assert {n: comparable(n, conf[n]) for n in names} == {n: comparable(n, v) for n, v in expected.items()}
    assert gunicorn_values(in_process, ["bind", "workers", "threads"]) == {
        "bind": ["[::1]:18080"], "workers": 3, "threads": serving.THREADS}


@pytest.mark.parametrize(("host", "bind"), [("127.0.0.1", "127.0.0.1:8080"), ("::", "[::]:8080"),
                                            ("localhost", "localhost:8080")])
def test_an_ipv6_host_is_bound_in_brackets(host: str, bind: str) -> None:
    config = config_mod.load(environ={"GITSERVER_HTTP_HOST": host, "GITSERVER_HTTP_PORT": "8080"})
    assert serving.bind_address(config) == bind
