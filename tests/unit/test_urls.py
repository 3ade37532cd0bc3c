"""The URLs the server hands out (gitserver.net.urls)."""

from __future__ import annotations

import pytest

from gitserver import config as config_mod
from gitserver.net.urls import http_clone_url, pipeline_url, ssh_clone_url


@pytest.mark.parametrize(("base", "expected"), [
    ("ssh://git@127.0.0.1:2222", "ssh://git@127.0.0.1:2222/acme/widgets.git"),
    ("ssh://git@git.example.com/", "ssh://git@git.example.com/acme/widgets.git"),
])
def test_ssh_clone_url(base: str, expected: str) -> None:
    assert ssh_clone_url(base, "acme", "widgets") == expected


@pytest.mark.parametrize(("base", "expected"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/git/acme/widgets.git"),
    ("https://git.example.com/prefix/", "https://git.example.com/prefix/git/acme/widgets.git"),
])
def test_http_clone_url(base: str, expected: str) -> None:
    assert http_clone_url(base, "acme", "widgets") == expected


def test_pipeline_url() -> None:
    assert pipeline_url("https://git.example.com/", 7) == "https://git.example.com/api/v1/pipelines/7"


def test_urls_from_the_configured_bases() -> None:
    cfg = config_mod.load(environ={"GITSERVER_PUBLIC_SSH_URL": "ssh://git@git.example.com/",
                                   "GITSERVER_PUBLIC_HTTP_URL": "https://git.example.com/"})
    assert ssh_clone_url(cfg.ssh_base_url, "acme", "w") == "ssh://git@git.example.com/acme/w.git"
    assert http_clone_url(cfg.http_base_url, "acme", "w") == "https://git.example.com/git/acme/w.git"
