"""gitserver.lfs.remote: the endpoint git-lfs derives, the batch answer, and every URL the remote
names checked before it is fetched, against a real HTTP server on a loopback port."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitserver.lfs import remote
from gitserver.lfs.batch import Pointer
from gitserver.lfs.store import Incoming, ObjectMismatch

DATA = b"object content " * 1000
OID = hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(("args", "expected"), [
    (("https", "example.com", None, "/acme/widgets.git"), "https://example.com/acme/widgets.git/info/lfs"),
    (("https", "example.com", 8443, "/acme/widgets"), "https://example.com:8443/acme/widgets.git/info/lfs"),
    (("http", "127.0.0.1", 8080, "/git/a/b.git/"), "http://127.0.0.1:8080/git/a/b.git/info/lfs"),
    # ssh and git remotes: https on the default port (git-lfs drops the SSH port).
    (("ssh", "example.com", 2222, "/acme/widgets.git"), "https://example.com/acme/widgets.git/info/lfs"),
    (("ssh", "example.com", None, "acme/widgets.git"), "https://example.com/acme/widgets.git/info/lfs"),
    (("git", "::1", None, "/a/b"), "https://[::1]/a/b.git/info/lfs"),
])
def test_endpoint_url(args: tuple[str, str, int | None, str], expected: str) -> None:
    assert remote.endpoint_url(*args) == expected


def test_split_credentials() -> None:
    url, auth = remote.split_credentials("https://x:p%40ss@example.com/a/b.git")
    assert url == "https://example.com/a/b.git"
    assert auth == "Basic eDpwQHNz"  # x:p@ss
    assert remote.split_credentials("https://example.com/a.git") == ("https://example.com/a.git", None)


def test_parse_answer() -> None:
    answer = {"objects": [
        {"oid": "a" * 64, "actions": {"download": {"href": "https://x/1", "header": {"Authorization": "t"}}}},
        {"oid": "b" * 64, "error": {"code": 404, "message": "Object does not exist"}},
        {"oid": "c" * 64, "actions": {"upload": {"href": "https://x/2"}}},
        {"oid": "d" * 64, "actions": {"download": {"href": "https://x/3", "header": {"n": 1}}}}]}
    parsed = remote.parse_answer(answer)
    assert parsed["a" * 64] == remote.Download(Pointer("a" * 64, 0), "https://x/1", {"Authorization": "t"})
    assert parsed["b" * 64] == "404 Object does not exist"
    assert parsed["c" * 64] == "no download action"
    assert parsed["d" * 64] == "a download action with a malformed header"
    with pytest.raises(remote.RemoteLfsError, match="transfer"):
        remote.parse_answer({"transfer": "tus", "objects": []})
    with pytest.raises(remote.RemoteLfsError):
        remote.parse_answer([])


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    """A loopback HTTP server whose answers the test sets per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                outer.seen.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                outer.routes.get(self.path, lambda h: h.send_error(404))(self)

            do_GET = do_POST = _serve  # noqa: N815 - http.server's names

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handle


def batch_answer(href: str, header: dict[str, str] | None = None) -> Handler:
    return reply(200, json.dumps({"objects": [{"oid": OID, "size": len(DATA), "actions": {
        "download": {"href": href, "header": header or {}}}}]}).encode(),
        {"Content-Type": "application/vnd.git-lfs+json"})


@pytest.fixture
def srv() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


def client(srv: Server, *, authorization: str | None = None, deadline: float = 60.0) -> remote.RemoteLfs:
    headers = {"Authorization": authorization} if authorization else {}
    return remote.RemoteLfs(srv.url + "/a/b.git/info/lfs", headers=headers, allow_private=True,
                            deadline=time.monotonic() + deadline, stop=lambda: None)


def fetch_one(srv: Server, tmp_path: Path, **kwargs: Any) -> Incoming:
    with client(srv, **kwargs) as lfs:
        [download] = lfs.downloads([Pointer(OID, len(DATA))])
        incoming = Incoming(OID, len(DATA), tmp_path)
        lfs.fetch(download, incoming)
        return incoming


def test_downloads_with_the_credentials_at_the_endpoint_only(srv: Server, tmp_path: Path) -> None:
    srv.routes["/a/b.git/info/lfs/objects/batch"] = batch_answer(srv.url + "/obj", {"X-Token": "from-answer",
                                                                                    "Host": "elsewhere"})
    srv.routes["/obj"] = reply(200, DATA)
    incoming = fetch_one(srv, tmp_path, authorization="Basic secret")
    assert incoming.verified().read_bytes() == DATA
    (_, _, batch_headers), (_, _, get_headers) = srv.seen
    assert batch_headers["Authorization"] == "Basic secret"
    assert "Authorization" not in get_headers and get_headers["X-Token"] == "from-answer"
    assert get_headers["Host"] == srv.url.removeprefix("http://")  # the action cannot name another host


def test_another_content_than_the_pointer_names_is_refused(srv: Server, tmp_path: Path) -> None:
    srv.routes["/a/b.git/info/lfs/objects/batch"] = batch_answer(srv.url + "/obj")
    srv.routes["/obj"] = reply(200, DATA[:-1] + b"!")
    with pytest.raises(ObjectMismatch):
        fetch_one(srv, tmp_path).verified()
    srv.routes["/obj"] = reply(200, DATA + b"more")
    with pytest.raises(ObjectMismatch, match="more than"):
        fetch_one(srv, tmp_path)


@pytest.mark.parametrize(("href", "why"), [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("http://0.0.0.0:9/x", "unspecified"),
    ("http://user:pw@127.0.0.1:9/x", "credentials"),
    ("http://[ff02::1]:9/x", "multicast"),
])
def test_hrefs_the_guard_refuses(srv: Server, tmp_path: Path, href: str, why: str) -> None:
    srv.routes["/a/b.git/info/lfs/objects/batch"] = batch_answer(href)
    with pytest.raises(remote.RemoteLfsError, match=why) as caught:
        fetch_one(srv, tmp_path)
    assert caught.value.kind == "LfsOriginRefused"


def test_private_addresses_are_refused_unless_allowed(srv: Server, tmp_path: Path) -> None:
    lfs = remote.RemoteLfs(srv.url + "/a/b.git/info/lfs", headers={}, allow_private=False,
                           deadline=time.monotonic() + 60, stop=lambda: None)
    with lfs, pytest.raises(remote.RemoteLfsError, match="loopback") as caught:
        lfs.downloads([Pointer(OID, len(DATA))])
    assert caught.value.kind == "LfsOriginRefused" and srv.seen == []


def test_redirects_and_compressed_bodies_are_not_followed(srv: Server, tmp_path: Path) -> None:
    srv.routes["/a/b.git/info/lfs/objects/batch"] = batch_answer(srv.url + "/obj")
    srv.routes["/obj"] = reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(remote.RemoteLfsError, match="answered 302"):
        fetch_one(srv, tmp_path)
    srv.routes["/obj"] = reply(200, b"\x1f\x8b...", {"Content-Encoding": "gzip"})
    with pytest.raises(remote.RemoteLfsError, match="Content-Encoding"):
        fetch_one(srv, tmp_path)
    assert [path for _, path, _ in srv.seen].count("/obj") == 2


def test_missing_objects_and_endpoint_errors(srv: Server) -> None:
    with client(srv) as lfs:
        with pytest.raises(remote.RemoteLfsError, match="answered 404"):
            lfs.downloads([Pointer(OID, len(DATA))])
        srv.routes["/a/b.git/info/lfs/objects/batch"] = reply(200, json.dumps({"objects": [
            {"oid": OID, "error": {"code": 404, "message": "Object does not exist"}}]}).encode())
        with pytest.raises(remote.MissingObjects) as caught:
            lfs.downloads([Pointer(OID, len(DATA)), Pointer("f" * 64, 3)])
    assert caught.value.kind == "LfsObjectMissing"
    assert [(p.oid, why) for p, why in caught.value.missing] == [
        (OID, "404 Object does not exist"), ("f" * 64, "not in the batch answer")]


def test_the_deadline_stops_a_transfer(srv: Server, tmp_path: Path) -> None:
    srv.routes["/a/b.git/info/lfs/objects/batch"] = batch_answer(srv.url + "/obj")
    with pytest.raises(remote.RemoteLfsError) as caught:
        fetch_one(srv, tmp_path, deadline=-1)
    assert caught.value.kind == "LfsFetchTimeout"
