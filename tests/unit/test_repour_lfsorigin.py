"""gitserver.repour.lfsorigin: which endpoint and headers an origin's LFS objects are asked
for (pure parts; the git and ssh parts run in tests/functional/test_repour_lfs.py)."""

from __future__ import annotations

import json

import pytest

from gitserver.repour import giturl, lfsorigin

BASIC_X_P = "Basic eDpw"  # x:p


def test_lfs_url_keeps_its_own_credentials() -> None:
    origin = giturl.parse_git_url("https://u:secret@git.example.org/a/b.git")
    endpoint = lfsorigin.configured_endpoint("https://x:p@lfs.example.net/a/b", origin)
    assert endpoint.url == "https://lfs.example.net/a/b"
    assert endpoint.headers == {"Authorization": BASIC_X_P}


@pytest.mark.parametrize(("lfs_url", "gets_them"), [
    ("https://git.example.org/a/b.git/info/lfs", True),  # the origin's own site
    ("https://GIT.example.org:443/lfs", False),  # another port spelt (443 explicit is not "none")
    ("https://lfs.example.org/a/b", False),  # another host
    ("http://git.example.org/a/b", False),  # another scheme
])
def test_the_origins_credentials_go_only_to_its_own_site(lfs_url: str, gets_them: bool) -> None:
    origin = giturl.parse_git_url("https://u:secret@git.example.org/a/b.git")
    endpoint = lfsorigin.configured_endpoint(lfs_url, origin)
    assert ("Authorization" in endpoint.headers) is gets_them


def test_parse_authenticate() -> None:
    answer = {"href": "https://lfs.example.org/a/b.git/info/lfs", "header": {"Authorization": "RemoteAuth t"},
              "expires_in": 600}
    endpoint = lfsorigin.parse_authenticate(json.dumps(answer).encode())
    assert endpoint is not None
    assert endpoint.url == answer["href"] and endpoint.headers == answer["header"]


@pytest.mark.parametrize("out", [
    b"", b"not json", b"[]", b'{"header": {}}', b'{"href": 1}',
    b'{"href": "https://x/", "header": {"a": 1}}', b'{"href": "https://x/", "header": []}',
    json.dumps({"href": "https://x/", "pad": "p" * lfsorigin.MAX_ANSWER_BYTES}).encode(),
])
def test_parse_authenticate_refuses(out: bytes) -> None:
    assert lfsorigin.parse_authenticate(out) is None


@pytest.mark.parametrize(("url", "destination"), [
    ("ssh://git@example.org:2222/a/b.git", "git@example.org"),
    ("ssh://example.org/a/b.git", "example.org"),
    ("git@example.org:a/b.git", "git@example.org"),
    ("example.org:a/b.git", "example.org"),
])
def test_ssh_destination(url: str, destination: str) -> None:
    assert lfsorigin._ssh_destination(giturl.parse_git_url(url)) == destination
