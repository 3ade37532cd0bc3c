"""Where Repour's sync asks an origin for its LFS objects, and with which headers, as git-lfs
would decide it (``docs/api/server-discovery.md``), for an origin that is untrusted.

In git-lfs's order:

1. ``lfs.url`` of the origin's committed ``.lfsconfig`` (of the first synced ref that has one):
   that endpoint, with the credentials written in it; the origin URL's credentials go there
   only when it is the origin URL's own scheme, host and port (repository content must not be
   able to send a caller's credentials to a host of its choosing).
2. An ssh origin: ``git-lfs-authenticate <path> download`` run on the origin over the very
   SSH command the git fetch used (no identity, the host key the fetch accepted), whose
   ``{"href", "header"}`` answer is the endpoint. A server without the command (or one that
   refuses it) leaves git-lfs's fallback: the https endpoint derived from the URL, anonymously.
3. An http(s) origin: ``<origin URL>[.git]/info/lfs`` with the URL's credentials; git://: the
   derived https endpoint, anonymously.

Every endpoint then goes through gitserver.lfs.remote's guard (checked, pinned, no redirects).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from gitserver.git.store import GIT, git_env
from gitserver.lfs import remote
from gitserver.lfs.pointers import GIT_TIMEOUT
from gitserver.repour.command import redact
from gitserver.repour.giturl import GitUrl
from gitserver.repour.gitwork import GitWork

log = logging.getLogger(__name__)

LFSCONFIG = ".lfsconfig"
LFS_URL_KEY = "lfs.url"
AUTHENTICATE = "git-lfs-authenticate"
DOWNLOAD = "download"
# git-lfs-authenticate answers one small JSON object.
MAX_ANSWER_BYTES = 64 * 1024
AUTHENTICATE_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Endpoint:
    url: str
    headers: Mapping[str, str]
    source: str  # how it was found, for the log and the error messages


def endpoint_for(work: GitWork, origin: GitUrl, revs: Sequence[str]) -> Endpoint:
    """The origin's LFS endpoint for the objects of ``revs`` (see the module docstring)."""
    configured = lfsconfig_url(work, revs)
    if configured is not None:
        return configured_endpoint(configured, origin)
    derived = remote.endpoint_url(origin.transport, origin.host, origin.port, origin.path)
    if origin.transport == "ssh":
        return ssh_authenticate(work, origin) or Endpoint(derived, {}, "derived from the ssh origin URL")
    if origin.transport in ("http", "https"):
        _, authorization = remote.split_credentials(origin.text)
        return Endpoint(derived, _basic(authorization), "derived from the origin URL")
    return Endpoint(derived, {}, f"derived from the {origin.transport} origin URL")


def lfsconfig_url(work: GitWork, revs: Sequence[str]) -> str | None:
    """``lfs.url`` of the committed ``.lfsconfig`` of the first of ``revs`` that sets it (read
    here, not through the job's git runner: the value may carry credentials, which the job's
    output must not show)."""
    for rev in revs:
        if rev.startswith("-") or "\n" in rev:
            continue
        done = subprocess.run([GIT, "--git-dir", str(work.git_dir), "config", f"--blob={rev}:{LFSCONFIG}",
                               "--get", LFS_URL_KEY], capture_output=True, env=git_env(), timeout=GIT_TIMEOUT)
        value = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode == 0 and value:
            return value
    return None


def configured_endpoint(url: str, origin: GitUrl) -> Endpoint:
    """``lfs.url``'s endpoint: its own credentials, or the origin's when it is the same site."""
    bare, authorization = remote.split_credentials(url)
    if authorization is None and origin.transport in ("http", "https") and _site(bare) == _site(origin.text):
        _, authorization = remote.split_credentials(origin.text)
    return Endpoint(bare, _basic(authorization), f"lfs.url of the origin's {LFSCONFIG}")


def ssh_authenticate(work: GitWork, origin: GitUrl) -> Endpoint | None:
    """git-lfs-authenticate's answer on an ssh origin, or None when the origin gives none."""
    env = work.env()
    argv = [*shlex.split(env["GIT_SSH_COMMAND"]), *(["-p", str(origin.port)] if origin.port else []),
            "--", _ssh_destination(origin), f"{AUTHENTICATE} {shlex.quote(origin.path)} {DOWNLOAD}"]
    out, status = _bounded_run(argv, env)
    if status != 0:
        log.info("%s on %s exited with %s: using the derived endpoint", AUTHENTICATE, redact(origin.text), status)
        return None
    return parse_authenticate(out)


def _bounded_run(argv: Sequence[str], env: Mapping[str, str]) -> tuple[bytes, int | None]:
    """A command's first :data:`MAX_ANSWER_BYTES` + 1 bytes of output and its exit status (None
    when it ran past :data:`AUTHENTICATE_TIMEOUT`): the origin's server chooses what it sends."""
    expired = threading.Event()
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, start_new_session=True) as proc:

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(AUTHENTICATE_TIMEOUT, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            out = proc.stdout.read(MAX_ANSWER_BYTES + 1)
            if len(out) > MAX_ANSWER_BYTES:
                proc.kill()
            status = proc.wait()
        finally:
            timer.cancel()
    return out, None if expired.is_set() else status


def parse_authenticate(out: bytes) -> Endpoint | None:
    """``{"href", "header"}`` (git-lfs's ``docs/api/authentication.md``), or None (pure)."""
    try:
        answer = json.loads(out) if len(out) <= MAX_ANSWER_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("href"), str):
        return None
    header = answer.get("header")
    header = {} if header is None else header
    if not isinstance(header, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in header.items()):
        return None
    return Endpoint(answer["href"], header, f"{AUTHENTICATE} over the origin's SSH")


def _ssh_destination(origin: GitUrl) -> str:
    """``[user@]host`` as git gives it to ssh."""
    user = (origin.text.split(":", 1)[0].rpartition("@")[0] if origin.scp_like
            else urlsplit(origin.text).username)
    return f"{user}@{origin.host}" if user else origin.host


def _site(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _basic(authorization: str | None) -> dict[str, str]:
    return {"Authorization": authorization} if authorization else {}
