"""A client of another server's Git LFS batch API (git-lfs's ``docs/api/batch.md``, basic
transfer, download only): which objects the remote has and where, then each object's bytes into
an :class:`~gitserver.lfs.store.Incoming`, which checks the digest and size like an upload.

Repour's sync uses it to bring an origin's objects along (gitserver.repour.lfssync). Every URL
it touches is hostile input: the endpoint comes from a caller's origin URL, and the action
hrefs from the remote's answer, which may name any host (a storage bucket, or
169.254.169.254). So each URL is checked with gitserver.net.netguard's rules and fetched over
a connection pinned to the checked address (:class:`~gitserver.net.netguard.PinnedAdapter`),
with no redirects and no proxies from the environment; the origin's credentials go to the
endpoint only, an href gets only the header its action names. The real git-lfs client is not
used for this: it would follow any href the remote answers, unchecked.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from gitserver.lfs import oids
from gitserver.lfs.batch import BASIC, MEDIA_TYPE, Pointer
from gitserver.lfs.store import CHUNK, Incoming
from gitserver.net import netguard

# Objects named per batch request (git-lfs's own default).
BATCH_SIZE = 100
# A batch answer is a list of hrefs and headers: far below this.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT = 30.0
# Seconds a transfer may stall before it is given up (the whole sync has its own deadline).
STALL_TIMEOUT = 120.0
# Headers an action may not set: they are the transport's, and Host would name another site.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                                "accept-encoding", "te", "upgrade"})
# Compressed bodies are refused rather than decompressed: a small body could expand without
# bound before the size check sees it.
IDENTITY = "identity"

StopCheck = Callable[[], None]


class RemoteLfsError(Exception):
    """The remote could not give an object; ``kind`` is the Repour ``error_type``."""

    def __init__(self, message: str, kind: str = "LfsFetchFailed") -> None:
        super().__init__(message)
        self.message, self.kind = message, kind


class MissingObjects(RemoteLfsError):
    """The remote lacks objects the pointers name: each with the remote's reason."""

    def __init__(self, missing: Sequence[tuple[Pointer, str]]) -> None:
        shown = "; ".join(f"{p.oid} ({p.size} bytes): {why}" for p, why in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(f"the origin's LFS server does not have {len(missing)} object(s) the "
                         f"synced refs name: {shown}{more}", "LfsObjectMissing")
        self.missing = list(missing)


@dataclasses.dataclass(frozen=True)
class Download:
    """One object's download action."""

    pointer: Pointer
    href: str
    header: Mapping[str, str]


def endpoint_url(scheme: str, host: str, port: int | None, path: str) -> str:
    """The LFS endpoint git-lfs derives from a remote (``docs/api/server-discovery.md``):
    ``<http(s)://host[:port]>/<path>.git/info/lfs``. ssh and git remotes get https on the
    default port (git-lfs drops the SSH port)."""
    web = scheme if scheme in netguard.SCHEMES else "https"
    netloc = f"[{host}]" if ":" in host else host
    if port and web == scheme:
        netloc += f":{port}"
    path = "/" + path.strip("/")
    if not path.endswith(".git"):
        path += ".git"
    return f"{web}://{netloc}{path}/info/lfs"


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its user part, and that user part as a Basic ``Authorization`` header
    (None when there is none)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=hostport)), f"Basic {token}"


class RemoteLfs:
    """One remote LFS endpoint, and the sessions pinned to each host it sends us to."""

    def __init__(self, endpoint: str, *, headers: Mapping[str, str], allow_private: bool,
                 deadline: float, stop: StopCheck, resolver: netguard.Resolver = socket.getaddrinfo) -> None:
        self.endpoint = endpoint.rstrip("/")
        # The endpoint's own headers (the origin's credentials, or git-lfs-authenticate's).
        self.headers = allowed_headers(headers)
        self.allow_private = allow_private
        self.deadline = deadline  # time.monotonic() after which the transfer is given up
        self.stop = stop
        self.resolver = resolver
        self._sessions: dict[tuple[str, str, int], requests.Session] = {}

    def __enter__(self) -> RemoteLfs:
        return self

    def __exit__(self, *_exc: object) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    # --- connections ---------------------------------------------------------------------

    def _session(self, url: str, what: str) -> requests.Session:
        """A session that can reach ``url``'s host only, at an address checked just now."""
        try:
            target = netguard.check_url(url, allow_private=self.allow_private)
            key = (target.scheme, target.host, target.port)
            if key not in self._sessions:
                addresses = netguard.resolve(target, allow_private=self.allow_private, resolver=self.resolver)
                session = requests.Session()
                session.trust_env = False  # environment proxies would connect elsewhere than checked
                adapter = netguard.PinnedAdapter(target, addresses[0])
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._sessions[key] = session
        except netguard.UnsafeURL as exc:
            raise RemoteLfsError(f"{what} refused: {exc.message}", "LfsOriginRefused") from exc
        return self._sessions[key]

    def _timeout(self) -> tuple[float, float]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RemoteLfsError("the LFS transfer from the origin took longer than repour_git_timeout",
                                 "LfsFetchTimeout")
        return min(CONNECT_TIMEOUT, left), min(STALL_TIMEOUT, left)

    # --- the batch -----------------------------------------------------------------------

    def downloads(self, pointers: Iterable[Pointer]) -> list[Download]:
        """The download action of every pointer; MissingObjects (naming them all) when the
        remote lacks any."""
        wanted = list(pointers)
        found: list[Download] = []
        missing: list[tuple[Pointer, str]] = []
        for start in range(0, len(wanted), BATCH_SIZE):
            self.stop()
            chunk = wanted[start:start + BATCH_SIZE]
            answered = self._batch(chunk)
            for pointer in chunk:
                outcome = answered.get(pointer.oid)
                if isinstance(outcome, Download):
                    found.append(dataclasses.replace(outcome, pointer=pointer))
                else:
                    missing.append((pointer, outcome or "not in the batch answer"))
        if missing:
            raise MissingObjects(missing)
        return found

    def _batch(self, pointers: Sequence[Pointer]) -> dict[str, Download | str]:
        url = self.endpoint + "/objects/batch"
        body = {"operation": "download", "transfers": [BASIC], "hash_algo": oids.HASH_ALGO,
                "objects": [{"oid": p.oid, "size": p.size} for p in pointers]}
        headers = {**self.headers, "Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE, "Accept-Encoding": IDENTITY}
        session = self._session(url, f"the origin's LFS endpoint {url}")
        try:
            with session.post(url, data=json.dumps(body), headers=headers, timeout=self._timeout(),
                              allow_redirects=False, stream=True) as resp:
                raw = _bounded_body(resp, MAX_ANSWER_BYTES)
                status = resp.status_code
        except requests.RequestException as exc:
            raise RemoteLfsError(f"the origin's LFS endpoint {url} could not be reached: "
                                 f"{type(exc).__name__}") from exc
        answer = _json(raw)
        if status != 200:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise RemoteLfsError(f"the origin's LFS endpoint {url} answered {status}"
                                 + (f": {str(message)[:300]}" if isinstance(message, str) else ""))
        return parse_answer(answer)

    # --- the bytes -----------------------------------------------------------------------

    def fetch(self, download: Download, incoming: Incoming) -> None:
        """The object's bytes into ``incoming`` (which refuses more than the pointer's size);
        the caller verifies and stores it."""
        href = download.href
        headers = {**allowed_headers(download.header), "Accept-Encoding": IDENTITY}
        what = f"the download of LFS object {download.pointer.oid}"
        session = self._session(href, f"{what} from {_shown(href)}")
        try:
            with session.get(href, headers=headers, timeout=self._timeout(), allow_redirects=False,
                             stream=True) as resp:
                if resp.status_code != 200:
                    raise RemoteLfsError(f"{what} from {_shown(href)} answered {resp.status_code}")
                if resp.headers.get("Content-Encoding", IDENTITY).lower() != IDENTITY:
                    raise RemoteLfsError(f"{what} came with Content-Encoding "
                                         f"{resp.headers['Content-Encoding'][:40]!r}; only identity is read")
                self._copy(resp, incoming, download.pointer.size)
        except requests.RequestException as exc:
            raise RemoteLfsError(f"{what} from {_shown(href)} failed: {type(exc).__name__}") from exc

    def _copy(self, resp: requests.Response, incoming: Incoming, size: int) -> None:
        left = size + 1  # one byte more tells a longer body (Incoming refuses it)
        while left > 0:
            self.stop()
            self._timeout()  # the deadline, between chunks
            chunk = resp.raw.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            incoming.write(chunk)


def allowed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a remote may have us send: none of the transport's own."""
    return {k: v for k, v in headers.items() if k.lower() not in _TRANSPORT_HEADERS}


def parse_answer(answer: object) -> dict[str, Download | str]:
    """oid → its download action, or the remote's reason for not giving it (pure)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("objects"), list):
        raise RemoteLfsError("the origin's LFS batch answer is not {\"objects\": [...]}")
    if answer.get("transfer", BASIC) != BASIC:
        raise RemoteLfsError(f"the origin's LFS server chose transfer {str(answer.get('transfer'))[:40]!r}; "
                             "only basic is spoken")
    out: dict[str, Download | str] = {}
    for item in answer["objects"]:
        if not isinstance(item, dict) or not isinstance(item.get("oid"), str):
            continue
        out[item["oid"]] = _outcome(item)
    return out


def _outcome(item: Mapping[str, Any]) -> Download | str:
    error = item.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')} {str(error.get('message', ''))[:200]}".strip()
    actions = item.get("actions")
    action = actions.get("download") if isinstance(actions, dict) else None
    if not isinstance(action, dict) or not isinstance(action.get("href"), str):
        return "no download action"
    header = action.get("header") or {}
    if not isinstance(header, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in header.items()):
        return "a download action with a malformed header"
    return Download(Pointer(item["oid"], 0), action["href"], header)


def _bounded_body(resp: requests.Response, limit: int) -> bytes:
    if resp.headers.get("Content-Encoding", IDENTITY).lower() != IDENTITY:
        raise RemoteLfsError("the origin's LFS batch answer is compressed; only identity is read")
    data = resp.raw.read(limit + 1)
    if len(data) > limit:
        raise RemoteLfsError(f"the origin's LFS batch answer is over {limit} bytes")
    return bytes(data)


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def _shown(url: str) -> str:
    """An href as errors show it: scheme, host and path, never its query (presigned URLs carry
    their signature there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))[:300]
