"""git URLs as Repour's callers send them, and the policy an origin must pass.

Pure parsing (:func:`parse_git_url`, Repour's :func:`external_to_internal`, the internal
repository a URL names) and :func:`check_origin`: https, git and ssh origins; http, ``file://``
and loopback/private hosts only when ``allow_private_networks`` is on; never a path inside the
data directory, however it is spelt (:mod:`gitserver.repour.localorigin`). A checked http(s)
host name carries the addresses that were validated, and git is pinned to them
(:meth:`GitUrl.git_settings`); a checked local origin carries the resolved path git is given.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from urllib.parse import unquote, urlsplit

from gitserver.config import Config
from gitserver.net import netguard, urls
from gitserver.policy.errors import GitserverError
from gitserver.policy.names import validate_name
from gitserver.repour import localorigin
from gitserver.repour.command import ProcessingError

# Pull/merge request refs as GitHub and GitLab publish them; fetched, never pushed as a branch.
PULL_REQUEST_RE = re.compile(r"^(?P<kind>pull|merge-requests)/(?P<number>[0-9]{1,12})$")

SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
# Schemes Repour's /git-external-to-internal translates.
EXTERNAL_SCHEMES = ("https", "http", "git", "git+ssh", "ssh")
_DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
_SCP_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):"
                     r"(?P<path>[^:]+)$")
MAX_URL_LENGTH = 2000


@dataclasses.dataclass(frozen=True)
class GitUrl:
    """A git remote as git understands it: URL forms, scp-like ``user@host:path``, local paths."""

    text: str
    scheme: str  # https http git ssh git+ssh ssh+git file; "ssh" for scp-like
    host: str = ""
    port: int | None = None
    path: str = ""
    scp_like: bool = False

    # The addresses check_origin() validated for the host name (http and https only; see
    # :meth:`git_settings`). Empty: git resolves the host itself (IP literals need nothing).
    addresses: tuple[str, ...] = ()
    # A checked local origin: the resolved path git is handed instead of ``text``
    # (:func:`gitserver.repour.localorigin.checked_path`).
    local_path: str = ""

    @property
    def fetch_url(self) -> str:
        """What git fetches from: the checked, resolved path of a local origin, else the URL."""
        return self.local_path or self.text

    @property
    def transport(self) -> str:
        """The git protocol name (``protocol.<name>.allow``)."""
        return "ssh" if self.scheme in ("git+ssh", "ssh+git") else self.scheme

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS.get(self.transport, 443)

    def git_settings(self) -> dict[str, str]:
        """``git -c`` settings that make git connect exactly where :func:`check_origin` looked.

        The origin check resolves the host and validates every address, but git (libcurl)
        would resolve the name again when it connects: a DNS answer that changed in between
        (rebinding: public address first, then 127.0.0.1 or 169.254.169.254) would reach an
        address that was never checked. ``http.curloptResolve`` (git >= 2.37) hands libcurl
        the checked addresses for ``host:port``, so it does not ask DNS at all. Redirects are
        not followed: one to another host would be resolved by libcurl, unchecked.

        git:// and ssh origins have no such option (git connects itself, ssh runs its own
        resolver), so between the check and the connection their host name is resolved
        again: a rebinding DNS server can still point those at an unchecked address. Refusing
        them is the only complete fix; operators who need that allow https origins only.
        """
        if self.transport not in ("http", "https") or not self.addresses:
            return {}
        addresses = ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        return {"http.curloptResolve": f"{self.host}:{self.effective_port}:{addresses}",
                "http.followRedirects": "false"}


def parse_git_url(text: object) -> GitUrl:
    """Parse a git remote; ValueError with the reason for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected a git URL")
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError("the URL contains whitespace or control characters")
    if text.startswith("-"):
        # git would read it as an option.
        raise ValueError("a URL cannot start with '-'")
    if "://" in text:
        return _parse_url_form(text)
    if text.startswith("/"):
        return GitUrl(text=text, scheme="file", path=text)
    match = _SCP_RE.match(text)
    if match is None:
        raise ValueError("not a git URL (expected scheme://host/path, user@host:path or /path)")
    host = match["host"].strip("[]")
    _check_host(host)
    path = match["path"]
    if not path.strip("/"):
        raise ValueError("the URL names no repository path")
    return GitUrl(text=text, scheme="ssh", host=host.lower(), path=path, scp_like=True)


def _parse_url_form(text: str) -> GitUrl:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r} is not a git transport ({', '.join(SCHEMES)})")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// URL cannot name a host")
        if not parts.path.strip("/"):
            raise ValueError("the URL names no repository path")
        return GitUrl(text=text, scheme="file", path=parts.path)
    # git's own parser reads "[addr]" before the '@' as the host (git://[::1]@example.com goes
    # to ::1) where urlsplit sees example.com; a user part with brackets or a second '@' is
    # read differently by git, curl and Python, so the checked host might not be the one git
    # connects to. git URL-decodes the whole URL first, so the decoded form is what counts.
    userinfo = unquote(parts.netloc.rpartition("@")[0])
    if any(c in userinfo for c in "[]@"):
        raise ValueError("the user part of the URL cannot contain '[', ']' or '@'")
    host = parts.hostname or ""
    if not host:
        raise ValueError("the URL has no host")
    _check_host(host)
    if not parts.path.strip("/"):
        raise ValueError("the URL names no repository path")
    return GitUrl(text=text, scheme=scheme, host=host, port=port, path=parts.path)


def _check_host(host: str) -> None:
    # ssh would read "-oProxyCommand=…" as an option (git refuses it too; this says why).
    if host.startswith("-"):
        raise ValueError("a host name cannot start with '-'")


def repo_path_parts(url: GitUrl) -> tuple[str, str]:
    """The last two path components (organisation, repository) with ``.git`` removed."""
    parts = [p for p in url.path.split("/") if p]
    if len(parts) < 2:
        raise ValueError("the URL does not name <tenant>/<repository>")
    return parts[-2], parts[-1].removesuffix(".git")


def external_to_internal(external_url: object, ssh_base: str, default_tenant: str = "") -> str:
    """Repour's translation of an upstream URL to the internal repository's URL.

    Like Repour (maitai's GitUrlParser): the last path component is the repository, the one
    before it the organisation (``gerrit`` is not one), and the internal URL is
    ``<base>/<organisation>/<repository>.git``. In gitserver the organisation is the tenant;
    an upstream URL without one maps into ``default_tenant`` when configured.
    """
    url = parse_git_url(external_url)
    if url.scp_like and "@" not in url.text.split(":", 1)[0]:
        # Repour reads "host:path" without "user@" as a URL whose scheme is "host".
        raise ValueError(f"scheme {url.text.split(':', 1)[0]!r} is not accepted; use one of "
                         f"{', '.join(EXTERNAL_SCHEMES)} or user@host:path")
    if url.scheme not in EXTERNAL_SCHEMES:
        raise ValueError(f"scheme {url.scheme!r} is not accepted; use one of {', '.join(EXTERNAL_SCHEMES)}")
    parts = [p for p in url.path.split("/") if p]
    if not parts or not parts[-1].removesuffix(".git"):
        raise ValueError("could not translate the URL: no repository specified")
    repository = parts[-1].removesuffix(".git")
    organisation = parts[-2] if len(parts) > 1 and parts[-2] != "gerrit" else default_tenant
    # scp-like "git@host:org/repo.git" puts the organisation after the colon.
    organisation = organisation.rpartition(":")[2]
    for value, what in ((organisation, "organisation"), (repository, "repository")):
        if value or what == "repository":
            try:
                validate_name(value, what)
            except GitserverError as exc:
                raise ValueError(exc.message) from exc
    if not organisation:
        # Like Repour: the repository alone, at the root of the internal server. (/internal-scm
        # puts such a project into repour_default_tenant; configure it to get that tenant here.)
        return f"{ssh_base.rstrip('/')}/{repository}.git"
    return urls.ssh_clone_url(ssh_base, organisation, repository)


def internal_repo_name(url_text: object) -> tuple[str, str]:
    """(tenant, repository) named by an internal URL: the SSH URL (``…/t/r.git``), the smart
    HTTP URL (``…/git/t/r.git``) or scp-like ``git@host:t/r.git``."""
    return repo_path_parts(parse_git_url(url_text))


@dataclasses.dataclass(frozen=True)
class RepoUrls:
    readwrite: str
    readonly: str


def repo_urls(config: Config, tenant: str, repo: str) -> RepoUrls:
    """The URLs handed out: SSH for writing, the read-only smart HTTP endpoint for builders."""
    return RepoUrls(readwrite=urls.ssh_clone_url(config.ssh_base_url, tenant, repo),
                    readonly=urls.http_clone_url(config.http_base_url, tenant, repo))


def is_pull_request(ref: str) -> bool:
    return PULL_REQUEST_RE.match(ref) is not None


def check_origin(url_text: str, config: Config,
                 resolver: netguard.Resolver = socket.getaddrinfo) -> GitUrl:
    """The origin as git will be given it, or a ProcessingError (exit code 10) saying why it
    is refused. Host addresses are checked with :mod:`gitserver.net.netguard`'s rules; for an
    http(s) host name the checked addresses come back in ``addresses``, and git is pinned to
    them (:meth:`GitUrl.git_settings`)."""
    try:
        url = parse_git_url(url_text)
    except ValueError as exc:
        raise ProcessingError(f"origin URL refused: {exc}", error_type="OriginRefused") from exc
    allow_private = config.allow_private_networks
    if url.transport in ("http", "file") and not allow_private:
        raise ProcessingError(f"origin URL refused: {url.transport} origins are only allowed when "
                              "private networks are allowed (use https, git or ssh)",
                              error_type="OriginRefused")
    if url.transport == "file":
        try:
            return dataclasses.replace(url, local_path=localorigin.checked_path(url.text, config.data_dir))
        except localorigin.LocalOriginRefused as exc:
            raise ProcessingError(f"origin URL refused: {exc}", error_type="OriginRefused") from exc
    host = f"[{url.host}]" if ":" in url.host else url.host
    try:
        # netguard speaks http(s); the host and port rules are the same for every transport.
        target, addresses = netguard.validate(f"https://{host}:{url.effective_port}/",
                                              allow_private=allow_private, resolver=resolver)
    except netguard.UnsafeURL as exc:
        raise ProcessingError(f"origin URL refused: {exc.message}", error_type="OriginRefused") from exc
    if target.address is None and url.transport in ("http", "https"):
        # A host name: pin git to what was checked. (git:// and ssh cannot be pinned; see
        # GitUrl.git_settings for that remaining gap.)
        return dataclasses.replace(url, addresses=tuple(str(a) for a in addresses))
    return url

