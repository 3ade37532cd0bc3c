"""Guarding outbound HTTP: which URLs gitserver may call, and calling them safely.

Webhooks and callbacks make the server send requests to URLs chosen by its users. Without a
guard, that is a server-side request forgery hole: a webhook on ``http://169.254.169.254/`` reads
the cloud metadata service, one on ``http://127.0.0.1:5432/`` probes the database. So:

* :func:`check_url` (pure) accepts only ``http``/``https`` URLs with a syntactically valid host,
  no credentials, a sane port; IP literals in any spelling (``2130706433``, ``0177.1``,
  ``[::ffff:127.0.0.1]``) are normalised and classified like resolved addresses.
* :func:`classify` (pure) names why an address is not a public unicast one (loopback, private,
  link-local, ...), looking through IPv4-mapped, NAT64 and 6to4 IPv6 forms.
* :func:`resolve` (DNS) refuses a host if *any* of its addresses is refused, so a name with one
  public and one internal address cannot be used to reach the internal one.
* :func:`send` connects to exactly the address that was checked (:class:`PinnedAdapter`), so a
  second DNS answer cannot swap in another one (DNS rebinding), while the Host header, TLS SNI
  and certificate checks still use the host name. Redirects are never followed, proxies from
  the environment are ignored (they would bypass the pinning), and only a bounded part of the
  response body is read.

``allow_private`` (``GITSERVER_ALLOW_PRIVATE_NETWORKS``) lifts the address rules for loopback,
private and link-local targets (tests and closed networks); addresses that can never be a
unicast destination (unspecified, multicast, broadcast) stay refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import connection as urllib3_connection

from gitserver.policy.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2000  # the column size of Webhook.url and Delivery.url
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Hostname syntax (RFC 1123 LDH labels). Underscores are refused: they are not valid in host
# names and only appear in service records or internal naming schemes.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Anything made only of digits, dots and hex prefixes is an IPv4 address to the C resolver
# (inet_aton accepts "2130706433", "0177.0.0.1", "0x7f.1"), so it is parsed as one here too.
_NUMERIC_HOST = re.compile(r"^(?:0[xX][0-9A-Fa-f]*|[0-9]+)(?:\.(?:0[xX][0-9A-Fa-f]*|[0-9]+)){0,3}\.?$")
# Reasons that stay refused even when private networks are allowed: these addresses are never
# a single reachable host.
NEVER_ALLOWED = frozenset({"unspecified", "multicast", "broadcast"})


class UnsafeURL(InvalidInput):
    """An outbound URL that gitserver refuses to call; the message says why.

    ``retryable`` is true only for failures that may go away by themselves (a host name that
    does not resolve right now); a refused address or a malformed URL stays refused.
    """

    def __init__(self, message: str, *, field: str | None = "url", retryable: bool = False) -> None:
        super().__init__(message, field=field)
        self.retryable = retryable


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked URL: its scheme, host (an IP literal in canonical form, or a lower-case
    host name), port, and the address when the host was an IP literal."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress | None = None


# --- classification (pure) --------------------------------------------------------------------

def _nets(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Checked in order; the first match names the reason. Sources: the IANA IPv4/IPv6
# special-purpose address registries (RFC 6890 and successors).
_IPV4_RULES = _nets(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),                  # "this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "private"),               # carrier-grade NAT (RFC 6598)
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),           # includes cloud metadata 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),               # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),               # documentation (TEST-NET-1)
    ("192.88.99.0/24", "reserved"),             # 6to4 relay anycast (deprecated)
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),              # benchmarking
    ("198.51.100.0/24", "reserved"),            # documentation (TEST-NET-2)
    ("203.0.113.0/24", "reserved"),             # documentation (TEST-NET-3)
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_IPV6_RULES = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),                      # IPv4-compatible (deprecated)
    ("::ffff:0:0:0/96", "reserved"),            # IPv4-translated (SIIT)
    ("64:ff9b:1::/48", "private"),              # local-use NAT64
    ("100::/64", "reserved"),                   # discard-only
    ("2001::/23", "reserved"),                  # IETF protocol assignments, incl. Teredo
    ("2001:db8::/32", "reserved"),              # documentation
    ("fc00::/7", "private"),                    # unique local addresses
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),                   # site-local (deprecated)
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that reach an
    IPv4 host (mapped, NAT64, 6to4), with the form's name."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped IPv6"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64 IPv6"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4 IPv6"
    return None


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``"loopback"``, ``"private"``,
    ``"link-local"``, ``"multicast"``, ``"unspecified"``, ``"broadcast"``, ``"reserved"``,
    suffixed ``" (IPv4-mapped IPv6)"`` etc. for embedded forms), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local"  # a zone index only makes sense for link-local addresses
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner, form = embedded
            reason = classify(inner)
            return f"{reason} ({form})" if reason else None
        rules = _IPV6_RULES
    else:
        rules = _IPV4_RULES
    for network, reason in rules:
        if address in network:
            return reason
    return None


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """The reason to refuse connecting to ``address`` under the policy, or None."""
    reason = classify(address)
    if reason is None:
        return None
    if allow_private and reason.split(" ", 1)[0] not in NEVER_ALLOWED:
        return None
    return reason


# --- URL and host syntax (pure) ---------------------------------------------------------------

def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse ``host`` the way ``inet_aton`` does (1 to 4 parts, decimal, octal with a leading
    0, hex with 0x; the last part fills the remaining bytes), or None if it is not numeric.

    The C resolver that ``getaddrinfo`` uses accepts these spellings, so ``http://0x7f.1/`` is
    127.0.0.1 to it; a guard that only knew dotted quads would take it for a host name.
    Raises :class:`UnsafeURL` for numeric hosts that are out of range.
    """
    if not _NUMERIC_HOST.match(host):
        return None
    parts = host.rstrip(".").split(".")
    values = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            value = int(part[2:] or "0", 16)
        elif len(part) > 1 and part.startswith("0"):
            if not set(part) <= set("01234567"):
                raise UnsafeURL(f"host {host!r} is not a valid IPv4 address (bad octal part {part!r})")
            value = int(part, 8)
        else:
            value = int(part)
        values.append(value)
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        raise UnsafeURL(f"host {host!r} is not a valid IPv4 address (a part is out of range)")
    number = 0
    for v in leading:
        number = number * 256 + v
    number = number * 256 ** (4 - len(leading)) + last
    return ipaddress.IPv4Address(number)


def _check_hostname(host: str) -> str:
    """Validate a DNS host name; returns it in lower-case ASCII (IDNA for non-ASCII names)."""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UnsafeURL(f"host {host!r} is not a valid international domain name") from exc
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        raise UnsafeURL("the host name must be 1 to 253 characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise UnsafeURL(f"host {host!r} is not a valid host name (bad label {label!r}: letters, "
                            "digits and inner hyphens only, at most 63 characters)")
    if labels[-1].isdigit():
        # No top-level domain is numeric (RFC 3696 section 2); "1.2.3.4.5" is a mistyped
        # address that resolvers might still interpret somehow.
        raise UnsafeURL(f"host {host!r} is neither a valid IPv4 address nor a host name "
                        "(numeric last label)")
    return name.lower()


def _parse_host(netloc_host: str) -> tuple[str, IPAddress | None]:
    """(canonical host, address if it is an IP literal) for the host part of a URL."""
    if netloc_host.startswith("["):
        if not netloc_host.endswith("]"):
            raise UnsafeURL("an IPv6 host must be written in brackets, like [2001:db8::1]")
        literal = netloc_host[1:-1]
        if "%" in literal:
            raise UnsafeURL("IPv6 zone indexes (%…) are not allowed in URLs")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError as exc:
            raise UnsafeURL(f"host {netloc_host!r} is not a valid IPv6 address") from exc
        return f"[{address.compressed}]", address
    legacy = parse_legacy_ipv4(netloc_host)
    if legacy is not None:
        return str(legacy), legacy
    return _check_hostname(netloc_host), None


def check_url(url: object, *, allow_private: bool = False) -> Target:
    """Check the syntax of an outbound URL and, for IP literals and ``localhost``, the address
    policy (no DNS). Raises :class:`UnsafeURL` naming what is wrong."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise UnsafeURL("the URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeURL(f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"scheme {parts.scheme or '(none)'!r} is not allowed; use http or https")
    netloc = parts.netloc
    if not netloc:
        raise UnsafeURL("the URL has no host")
    if "@" in netloc:
        raise UnsafeURL("credentials in the URL are not allowed (use the webhook secret instead)")
    host_text, sep, port_text = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not sep:
        host_text, port_text = netloc, ""
    if sep and not port_text:
        raise UnsafeURL("the URL has an empty port")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UnsafeURL(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS[scheme]
    if not host_text:
        raise UnsafeURL("the URL has no host")
    host, address = _parse_host(host_text)
    if address is not None:
        reason = refusal(address, allow_private)
        if reason:
            raise UnsafeURL(f"host {host} is a {reason} address; targets must be public addresses")
    elif (host == "localhost" or host.endswith(".localhost")) and not allow_private:
        # RFC 6761: these names always mean the loopback interface, whatever DNS says.
        raise UnsafeURL(f"host {host} is a loopback address; targets must be public addresses")
    return Target(url=url, scheme=scheme, host=host, port=port, address=address)


# --- resolution (I/O) -------------------------------------------------------------------------

def resolve(target: Target, *, allow_private: bool = False,
            resolver: Resolver = socket.getaddrinfo) -> list[IPAddress]:
    """The addresses to connect to for ``target``, all checked against the policy.

    Refuses the target if any address is refused: an attacker who controls a name's DNS could
    otherwise list one public and one internal address and hope for the second.
    """
    if target.address is not None:
        return [target.address]
    try:
        infos = resolver(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeURL(f"host {target.host} does not resolve ({exc})", retryable=True) from exc
    addresses: list[IPAddress] = []
    for info in infos:
        text = str(info[4][0])
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise UnsafeURL(f"host {target.host} resolved to an unusable address {text!r}") from exc
        reason = refusal(address, allow_private)
        if reason:
            raise UnsafeURL(f"host {target.host} resolves to {address}, a {reason} address; "
                            "targets must be public addresses")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURL(f"host {target.host} has no address", retryable=True)
    return addresses


def validate(url: object, *, allow_private: bool = False,
             resolver: Resolver = socket.getaddrinfo) -> tuple[Target, list[IPAddress]]:
    """:func:`check_url` then :func:`resolve`: everything decided before connecting."""
    target = check_url(url, allow_private=allow_private)
    return target, resolve(target, allow_private=allow_private, resolver=resolver)


# --- connecting to the checked address ---------------------------------------------------------

class _PinnedMixin(HTTPConnection):
    """Opens the TCP connection to ``pinned_address`` instead of resolving the host again.

    urllib3 keeps using the host name for the Host header, SNI and certificate matching. (A
    subclass of HTTPConnection so that it is one to urllib3's errors; the HTTPS variant puts
    HTTPSConnection before it in its bases.)
    """

    pinned_address: str

    def _new_conn(self) -> socket.socket:
        try:
            return urllib3_connection.create_connection(
                (self.pinned_address, self.port), self.timeout,
                source_address=self.source_address, socket_options=self.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self.pinned_address} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"cannot connect to {self.pinned_address}: {exc}") from exc


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    def __init__(self, *args: Any, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned_address = pinned_address


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    def __init__(self, *args: Any, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned_address = pinned_address


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """A requests transport adapter that sends to one checked (host, port) only, over a TCP
    connection to one checked address. Requests to any other host are refused, so even a
    caller that follows redirects cannot be led elsewhere through it."""

    def __init__(self, target: Target, address: IPAddress) -> None:
        super().__init__(max_retries=0)
        self.target = target
        self.address = address
        self._pools: list[HTTPConnectionPool] = []

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Mapping[str, str] | None = None,
                                        cert: Any = None) -> HTTPConnectionPool:
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        scheme = host_params["scheme"]
        host = str(host_params["host"] or "")
        port = host_params["port"] or _DEFAULT_PORTS.get(scheme, 0)
        try:
            canonical, _address = _parse_host(f"[{host}]" if ":" in host else host)
        except UnsafeURL:
            canonical = ""
        if (scheme, canonical, port) != (self.target.scheme, self.target.host, self.target.port):
            raise requests.exceptions.InvalidURL(
                f"refusing to send to {request.url}: only {self.target.url} was checked")
        pool: HTTPConnectionPool
        if scheme == "https":
            pool = _PinnedHTTPSPool(host, port, pinned_address=str(self.address), **pool_kwargs)
        else:
            # The TLS settings in pool_kwargs mean nothing to a plain HTTP connection.
            pool = _PinnedHTTPPool(host, port, pinned_address=str(self.address))
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
        self._pools.clear()
        super().close()


@dataclasses.dataclass(frozen=True)
class Response:
    """What :func:`send` got back: status, headers, the first ``max_body`` bytes, timing."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    address: str


def send(method: str, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float,
         allow_private: bool = False, max_body: int = 2048, verify: bool | str = True,
         resolver: Resolver = socket.getaddrinfo) -> Response:
    """Send one request to ``url`` after checking it, pinned to the checked address.

    Raises :class:`UnsafeURL` when the URL or its addresses are refused and
    ``requests.RequestException`` for transport failures (connect errors, timeouts). Redirects
    are returned as responses, never followed. ``verify`` is requests' TLS setting (a CA
    bundle path for receivers with a private CA).
    """
    target, addresses = validate(url, allow_private=allow_private, resolver=resolver)
    address = addresses[0]
    started = time.monotonic()
    with requests.Session() as session:
        session.trust_env = False  # environment proxies would connect elsewhere than checked
        adapter = PinnedAdapter(target, address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.request(method, url, data=body, headers=dict(headers), timeout=timeout,
                             allow_redirects=False, stream=True, verify=verify) as resp:
            data = _read_at_most(resp, max_body, timeout)
            return Response(status=resp.status_code, headers=dict(resp.headers), body=data,
                            seconds=time.monotonic() - started, address=str(address))


def _read_at_most(resp: requests.Response, limit: int, timeout: float) -> bytes:
    """The first ``limit`` bytes of the body; the rest is never read (a receiver answering
    with an endless body must not tie up a worker or its memory)."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    try:
        # read1 returns what has arrived (up to the size asked), so the bytes received before
        # a stall are kept; iter_content would wait for a full chunk and lose them.
        while size < limit and time.monotonic() < deadline:
            chunk = resp.raw.read1(limit - size, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (Urllib3Error, OSError, requests.RequestException):
        # The status line and headers arrived: that is the answer. A body that breaks off or
        # stalls only shortens the excerpt.
        pass
    return b"".join(chunks)[:limit]
