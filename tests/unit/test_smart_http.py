"""The pure parts of read-only smart HTTP, and the upload-pack child with stand-in commands."""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
from pathlib import Path

import pytest

from gitserver.git import http as githttp
from gitserver.git.store import PROTECTED_CONFIG, RECEIVE_PACK, UPLOAD_PACK
from gitserver.policy.errors import InvalidInput, PayloadTooLarge

# --- names from the URL --------------------------------------------------------------------------

@pytest.mark.parametrize(("tenant", "repo", "expected"), [
    ("acme", "widgets.git", ("acme", "widgets")),
    ("acme", "widgets", ("acme", "widgets")),
    ("a", "b.c-d_e", ("a", "b.c-d_e")),
    ("ACME9", "w.gitx", ("ACME9", "w.gitx")),
])
def test_repo_names_accepts(tenant: str, repo: str, expected: tuple[str, str]) -> None:
    assert githttp.repo_names(tenant, repo) == expected


@pytest.mark.parametrize(("tenant", "repo", "field"), [
    ("..", "r.git", "tenant"),
    ("acme", "..", "repository"),
    ("acme", "...git", "repository"),
    ("acme", "..git", "repository"),
    ("acme", "a..b", "repository"),
    ("acme", ".git", "repository"),
    ("acme", "", "repository"),
    ("", "r", "tenant"),
    ("acme", "r.git.git", "repository"),
    ("acme", "/etc/passwd", "repository"),
    ("acme", "../../etc", "repository"),
    ("/", "r", "tenant"),
    ("-x", "r", "tenant"),
    ("acme", "-r", "repository"),
    ("acme", ".hidden", "repository"),
    ("acme", "r;id", "repository"),
    ("acme", "r`id`", "repository"),
    ("acme", "r\nid", "repository"),
    ("acme", "r\x00", "repository"),
    ("acme", "r'", "repository"),
    ("acme", "été", "repository"),
    ("acme", "r.lock", "repository"),
    ("acme", "a" * 101, "repository"),
    ("t" * 10_000, "r", "tenant"),
])
def test_repo_names_refuses(tenant: str, repo: str, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        githttp.repo_names(tenant, repo)
    assert exc.value.field == field
    assert f"invalid {field} name in the URL" in exc.value.message
    assert len(exc.value.message) < 300 and "\n" not in exc.value.message


# --- service and protocol ------------------------------------------------------------------------

def test_service_from_query() -> None:
    assert githttp.service_from_query("git-upload-pack") == UPLOAD_PACK
    assert githttp.service_from_query("git-receive-pack") == RECEIVE_PACK


@pytest.mark.parametrize(("value", "shown"), [
    (None, "smart HTTP"),
    ("", "smart HTTP"),
    ("git-upload-archive", "'git-upload-archive'"),
    ("upload-pack", "'upload-pack'"),
    ("GIT-UPLOAD-PACK", "'GIT-UPLOAD-PACK'"),
    ("x" * 500, "unsupported service value"),
    ("git-upload-pack\n", "unsupported service value"),
])
def test_service_from_query_refuses(value: str | None, shown: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        githttp.service_from_query(value)
    assert shown in exc.value.message
    assert exc.value.field == "service"


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("version=2", "version=2"),
    ("version=1", "version=1"),
    ("version=0", "version=0"),
    (" version=2 ", "version=2"),
    ("", None),
    ("version=3", None),
    ("version=22", None),
    ("version=2:object-format=sha1", None),
    ("version=2\nGIT_DIR=/etc", None),
    ("version=2;rm -rf /", None),
    ("VERSION=2", None),
    ("x" * 10_000, None),
])
def test_git_protocol_header(header: str | None, expected: str | None) -> None:
    assert githttp.git_protocol(header) == expected


def test_pkt_lines() -> None:
    assert githttp.pkt_line(b"# service=git-upload-pack\n") == b"001e# service=git-upload-pack\n"
    assert githttp.pkt_line(b"") == b"0004"
    with pytest.raises(ValueError):
        githttp.pkt_line(b"x" * 65517)
    assert githttp.advertisement_prefix(UPLOAD_PACK, None) == b"001e# service=git-upload-pack\n0000"
    assert githttp.advertisement_prefix(UPLOAD_PACK, "version=1").startswith(b"001e# service=")
    assert githttp.advertisement_prefix(UPLOAD_PACK, "version=2") == b""


def test_upload_pack_argv() -> None:
    argv = githttp.upload_pack_argv(Path("/data/repos/t/r.git"), Path("/data/hooks"), advertise=True)
    assert argv[0] == "git" and argv[-1] == "/data/repos/t/r.git"
    assert argv[-5:-1] == ["upload-pack", "--strict", "--stateless-rpc", "--advertise-refs"]
    settings = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    # v0 requests name reachable objects only: allowAnySHA1InWant=false clears git's reachable
    # permission too, so it must come before allowReachableSHA1InWant=true.
    assert (settings.index("uploadpack.allowAnySHA1InWant=false")
            < settings.index("uploadpack.allowReachableSHA1InWant=true"))
    assert "uploadpack.allowFilter=true" in settings
    # The protection settings are all there, after the HTTP ones (the last -c wins).
    protected = settings[len(githttp.HTTP_UPLOAD_PACK_CONFIG):]
    for key, value in PROTECTED_CONFIG.items():
        assert f"{key}={value}" in protected
    assert "core.hooksPath=/data/hooks" in settings
    rpc = githttp.upload_pack_argv(Path("/r.git"), Path("/h"), advertise=False)
    assert "--advertise-refs" not in rpc and rpc[-2] == "--stateless-rpc"


def test_upload_pack_env_is_minimal() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/x", "GITSERVER_DATABASE_URL": "postgresql://secret",
            "GIT_DIR": "/elsewhere", "AWS_SECRET_ACCESS_KEY": "s"}
    env = githttp.upload_pack_env("version=2", base)
    assert env["GIT_PROTOCOL"] == "version=2"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert not {"GITSERVER_DATABASE_URL", "GIT_DIR", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert "GIT_PROTOCOL" not in githttp.upload_pack_env(None, base)


# --- request bodies ------------------------------------------------------------------------------

def _read(data: bytes, *, length: int | None = -1, encoding: str | None = None,
          limit: int = 1 << 20) -> bytes:
    body = githttp.RequestBody(io.BytesIO(data), content_length=len(data) if length == -1 else length,
                               content_encoding=encoding, limit=limit)
    return b"".join(body.chunks())


def test_body_plain_and_chunked() -> None:
    data = os.urandom(300_000)
    assert _read(data) == data
    assert _read(data, length=None) == data  # chunked transfer: read to the end
    assert _read(data, encoding="identity") == data
    assert _read(data + b"trailing", length=len(data)) == data  # never past Content-Length


def test_body_gzip() -> None:
    data = b"0032have " + b"1" * 40 + b"\n" * 1000
    assert _read(gzip.compress(data), encoding="gzip") == data
    assert _read(gzip.compress(data), encoding="x-gzip", length=None) == data


@pytest.mark.parametrize(("data", "kwargs", "error", "text"), [
    (b"x" * 101, {"limit": 100}, PayloadTooLarge, "limit of 100 bytes"),
    (b"x" * 101, {"limit": 100, "length": None}, PayloadTooLarge, "limit of 100 bytes"),
    (gzip.compress(b"0" * 10_000, mtime=0), {"limit": 1000, "encoding": "gzip"}, PayloadTooLarge,
     "http_git_max_request_bytes"),
    (b"not gzip at all", {"encoding": "gzip"}, InvalidInput, "not valid gzip"),
    (gzip.compress(b"x" * 1000, mtime=0)[:-10], {"encoding": "gzip"}, InvalidInput, "truncated"),
    (gzip.compress(b"a", mtime=0) + b"junk", {"encoding": "gzip"}, InvalidInput, "after the end"),
    (b"short", {"length": 100}, InvalidInput, "ended before its Content-Length"),
])
def test_body_refusals(data: bytes, kwargs: dict[str, object], error: type[Exception],
                       text: str) -> None:
    with pytest.raises(error) as exc:
        _read(data, **kwargs)  # type: ignore[arg-type]
    assert text in str(exc.value)


def test_body_refused_before_reading() -> None:
    class Unreadable(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("the body was read")

    with pytest.raises(PayloadTooLarge):
        githttp.RequestBody(Unreadable(), content_length=101, content_encoding=None, limit=100)
    with pytest.raises(githttp.UnsupportedMediaType) as exc:
        githttp.RequestBody(Unreadable(), content_length=1, content_encoding="br", limit=100)
    assert "'br'" in exc.value.message and exc.value.status == 415


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 kB
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge):
        _read(bomb, encoding="gzip", limit=1 << 20)
    assert time.monotonic() - started < 2


# --- the child process, with stand-in commands ---------------------------------------------------

class Recorder:
    """A :class:`gitserver.git.http.TransferObserver` that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.bytes = {"sent": 0, "received": 0}

    def started(self) -> None:
        self.events.append("started")

    def finished(self) -> None:
        self.events.append("finished")

    def transferred(self, direction: str, n: int) -> None:
        self.bytes[direction] += n


def _child(code: str, tmp_path: Path, observer: Recorder) -> githttp.UploadPackProcess:
    return githttp.UploadPackProcess([sys.executable, "-c", code], dict(os.environ), tmp_path,
                                     observer, what="test")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


CAT = "import sys,shutil; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)"


def test_child_streams_body_through(tmp_path: Path) -> None:
    observer = Recorder()
    data = os.urandom(1_000_000)
    child = _child(CAT, tmp_path, observer)
    child.start(githttp.RequestBody(io.BytesIO(data), content_length=len(data),
                                    content_encoding=None, limit=len(data)))
    out = githttp.StreamingResponse(child, child.first_chunk())
    assert b"".join(out) == data
    assert observer.bytes == {"sent": len(data), "received": len(data)}
    assert observer.events == ["started", "finished"]
    out.close()  # idempotent
    assert observer.events == ["started", "finished"]


def test_child_body_over_limit_stops_git_before_any_answer(tmp_path: Path) -> None:
    # Reads everything it is given and never answers, like upload-pack before a flush.
    code = "import sys\nwhile sys.stdin.buffer.read(65536): pass\nimport time; time.sleep(60)"
    observer = Recorder()
    child = _child(code, tmp_path, observer)
    child.start(githttp.RequestBody(io.BytesIO(b"x" * 500_000), content_length=None,
                                    content_encoding=None, limit=100_000))
    with pytest.raises(PayloadTooLarge):
        child.first_chunk()
    child.close()
    assert child.proc is not None and child.proc.returncode == -15  # stopped by SIGTERM
    assert observer.events == ["started", "finished"]


def test_child_that_exits_without_answering(tmp_path: Path) -> None:
    child = _child("import sys; sys.stderr.write('fatal: protocol error'); sys.exit(128)",
                   tmp_path, Recorder())
    child.start(githttp.RequestBody(io.BytesIO(b"0000"), content_length=4, content_encoding=None,
                                    limit=100))
    with pytest.raises(githttp.UploadFailed):
        child.first_chunk()
    assert "protocol error" in child.stderr_tail()
    child.close()


def test_close_mid_stream_kills_the_process_group(tmp_path: Path) -> None:
    # A parent that starts a grandchild (like upload-pack and pack-objects), then streams forever.
    code = ("import subprocess,sys,time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "sys.stdout.buffer.write(str(p.pid).encode() + b'\\n'); sys.stdout.flush()\n"
            "while True:\n    sys.stdout.buffer.write(b'x' * 65536); sys.stdout.flush()\n")
    observer = Recorder()
    child = _child(code, tmp_path, observer)
    child.start(None)
    out = githttp.StreamingResponse(child, child.first_chunk())
    grandchild = int(next(out).split(b"\n")[0])
    assert next(out)  # streaming
    assert child.proc is not None
    pid = child.proc.pid
    out.close()  # what the WSGI server does when the client goes away
    assert child.proc.poll() is not None
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild) and not _alive(pid)
    assert observer.events == ["started", "finished"]


def test_close_before_iterating_still_stops_git(tmp_path: Path) -> None:
    child = _child("import time; print('hi', flush=True); time.sleep(60)", tmp_path, Recorder())
    child.start(None)
    out = githttp.StreamingResponse(child, child.first_chunk())
    out.close()
    assert child.proc is not None and child.proc.poll() is not None


def test_routes_match_their_openapi_description() -> None:
    import falcon

    from gitserver.api import openapi, smart_http

    app = falcon.App()
    smart_http.add_routes(app, ctx=None)
    routes = openapi.app_routes(app)
    assert set(routes) == set(smart_http.OPENAPI_PATHS)
    for path, methods in routes.items():
        described = {k for k in smart_http.OPENAPI_PATHS[path] if k in openapi.HTTP_METHODS}
        assert described == methods, path
    document = openapi.build_document([smart_http])
    assert document["paths"]["/git/{tenant}/{repo}/info/refs"]["get"]["operationId"] == "gitInfoRefs"
