"""The outbound URL guard: syntax, address classes in every spelling, DNS answers, pinning."""

from __future__ import annotations

import http.server
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests

from gitserver.net import netguard
from gitserver.net.netguard import UnsafeURL, check_url, classify, parse_legacy_ipv4

# --- syntax ------------------------------------------------------------------------------------

BAD_SYNTAX = [
    ("", "a URL is required"),
    ("ftp://example.com/", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://example.com/", "scheme 'gopher'"),
    ("example.com/hook", "scheme '(none)'"),
    ("http:///path", "no host"),
    ("http://user:pw@example.com/", "credentials in the URL"),
    ("http://user@example.com/", "credentials in the URL"),
    ("http://example.com:0/", "port '0'"),
    ("http://example.com:65536/", "port '65536'"),
    ("http://example.com:-1/", "port '-1'"),
    ("http://example.com:80a/", "port '80a'"),
    ("http://example.com:/", "empty port"),
    ("http://exa mple.com/", "whitespace"),
    ("http://example.com/\n", "whitespace"),
    ("http://example.com\\@evil/", "backslashes"),
    ("http://-bad.example.com/", "bad label '-bad'"),
    ("http://bad-.example.com/", "bad label 'bad-'"),
    ("http://under_score.example.com/", "bad label 'under_score'"),
    ("http://a..b/", "bad label ''"),
    ("http://" + "a" * 64 + ".com/", "at most 63"),
    ("http://" + ".".join(["abcdefghi"] * 26) + "/", "1 to 253"),
    ("http://[::1/", "cannot be parsed"),
    ("http://[fe80::1%25eth0]/", "zone indexes"),
    ("http://[not-v6]/", "cannot be parsed"),
    ("http://256.1.1.1/", "out of range"),
    ("http://1.2.3.4.5/", "numeric last label"),
    ("http://09.1.1.1/", "bad octal part"),
    ("http://4294967296/", "out of range"),
    ("http://example.com/" + "x" * 2000, "longer than 2000"),
]


@pytest.mark.parametrize(("url", "message"), BAD_SYNTAX)
def test_malformed_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(UnsafeURL, match=re.escape(message)) as info:
        check_url(url, allow_private=True)
    assert info.value.field == "url" and info.value.status == 400


GOOD = [
    ("https://hooks.example.com/x?y=1", "https", "hooks.example.com", 443),
    ("HTTP://Hooks.Example.COM:8080/", "http", "hooks.example.com", 8080),
    ("http://example.com./", "http", "example.com", 80),
    ("https://[2606:4700::1111]:8443/p", "https", "[2606:4700::1111]", 8443),
    ("http://8.8.8.8/", "http", "8.8.8.8", 80),
    ("http://134744072/", "http", "8.8.8.8", 80),          # decimal 8.8.8.8
    ("https://bücher.example/", "https", "xn--bcher-kva.example", 443),
]


@pytest.mark.parametrize(("url", "scheme", "host", "port"), GOOD)
def test_good_urls_are_normalised(url: str, scheme: str, host: str, port: int) -> None:
    target = check_url(url)
    assert (target.scheme, target.host, target.port) == (scheme, host, port)
    assert target.url == url


# --- IPv4 spellings ----------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "address"), [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),        # decimal
    ("017700000001", "127.0.0.1"),      # octal
    ("0x7f000001", "127.0.0.1"),        # hex
    ("0x7F.0.0.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.1", "127.0.0.1"),            # two parts: 127 and 0.0.1
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x0", "0.0.0.0"),
    ("169.254.43518", "169.254.169.254"),
    ("10.0.0.1.", "10.0.0.1"),
    ("example.com", None),
    ("1e100.net", None),
    ("0x7g.1", None),
])
def test_legacy_ipv4_spellings_parse_like_inet_aton(host: str, address: str | None) -> None:
    parsed = parse_legacy_ipv4(host)
    assert (str(parsed) if parsed else None) == address
    if address is not None:
        assert parsed == ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))


# --- address classes ---------------------------------------------------------------------------

REFUSED_HOSTS = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f.1", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("localhost", "loopback"),
    ("LOCALHOST.", "loopback"),
    ("api.localhost", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("0.1.2.3", "reserved"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),
    ("100.127.255.255", "private"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("[::1]", "loopback"),
    ("[::]", "unspecified"),
    ("[::ffff:127.0.0.1]", "loopback (IPv4-mapped IPv6)"),
    ("[::ffff:7f00:1]", "loopback (IPv4-mapped IPv6)"),
    ("[::ffff:10.0.0.1]", "private (IPv4-mapped IPv6)"),
    ("[::ffff:169.254.169.254]", "link-local (IPv4-mapped IPv6)"),
    ("[64:ff9b::127.0.0.1]", "loopback (NAT64 IPv6)"),
    ("[2002:7f00:1::]", "loopback (6to4 IPv6)"),
    ("[::127.0.0.1]", "reserved"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("[fe80::1]", "link-local"),
    ("[febf::1]", "link-local"),
    ("[ff02::1]", "multicast"),
    ("[2001:db8::1]", "reserved"),
]


@pytest.mark.parametrize(("host", "reason"), REFUSED_HOSTS)
def test_non_public_hosts_are_refused_naming_the_class(host: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match=re.escape(f"a {reason} address")):
        check_url(f"http://{host}:8080/hook")


ALLOWED_WHEN_PRIVATE = [h for h, r in REFUSED_HOSTS
                        if r.split(" ")[0] not in ("unspecified", "multicast", "broadcast")]


@pytest.mark.parametrize("host", ALLOWED_WHEN_PRIVATE)
def test_allow_private_networks_lifts_the_address_rules(host: str) -> None:
    assert check_url(f"http://{host}:8080/hook", allow_private=True).port == 8080


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "224.0.0.1", "255.255.255.255", "[ff02::1]"])
def test_never_unicast_addresses_stay_refused_when_private_is_allowed(host: str) -> None:
    with pytest.raises(UnsafeURL, match=r"unspecified|multicast|broadcast"):
        check_url(f"http://{host}/", allow_private=True)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1",
                                     "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_are_public(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None


# --- DNS ---------------------------------------------------------------------------------------

def fake_resolver(*answers: str) -> Any:
    def resolve(host: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0)) for a in answers]
    return resolve


def test_a_name_resolving_to_a_public_address_is_accepted() -> None:
    target, addresses = netguard.validate("https://hooks.example.com/",
                                          resolver=fake_resolver("93.184.216.34", "93.184.216.34"))
    assert target.host == "hooks.example.com" and addresses == [ipaddress.ip_address("93.184.216.34")]


@pytest.mark.parametrize(("answers", "reason"), [
    (("127.0.0.1",), "loopback"),
    (("93.184.216.34", "10.0.0.5"), "private"),        # one bad answer spoils the name
    (("::ffff:169.254.169.254",), "link-local"),
    (("fd00::1",), "private"),
])
def test_a_name_resolving_to_an_internal_address_is_refused(answers: tuple[str, ...], reason: str) -> None:
    with pytest.raises(UnsafeURL, match=f"resolves to .*a {reason}") as info:
        netguard.validate("http://rebind.example.com/", resolver=fake_resolver(*answers))
    assert not info.value.retryable


def test_a_name_that_does_not_resolve_is_refused_as_retryable() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve") as info:
        netguard.validate("http://nowhere.example.com/", resolver=fake_resolver())
    assert info.value.retryable


def test_ip_literals_are_not_resolved() -> None:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("resolver called for an IP literal")

    _target, addresses = netguard.validate("http://8.8.8.8/", resolver=fail)
    assert addresses == [ipaddress.ip_address("8.8.8.8")]


# --- sending: pinned address, no redirects, bounded body ----------------------------------------

class _Receiver(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Receiver.seen.append((self.path, dict(self.headers), body))
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            time.sleep(2)  # the body never completes within the client's timeout
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"y" * 100_000)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_send_connects_to_the_checked_address_and_keeps_the_host_header(receiver: int) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        # The first answer is the one checked; a rebinding DNS server would answer differently
        # the second time, but there must be no second time.
        answer = "127.0.0.1" if len(calls) == 1 else "10.9.9.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port))]

    resp = netguard.send("POST", f"http://hooks.example.test:{receiver}/hook", body=b'{"a":1}',
                         headers={"X-Test": "1"}, timeout=5, allow_private=True, max_body=2048,
                         resolver=resolver)
    assert resp.status == 200 and resp.address == "127.0.0.1"
    assert resp.body == b"y" * 2048  # only the excerpt is read
    assert calls == ["hooks.example.test"]
    path, headers, body = _Receiver.seen[0]
    assert (path, body) == ("/hook", b'{"a":1}')
    assert headers["Host"] == f"hooks.example.test:{receiver}" and headers["X-Test"] == "1"


def test_send_refuses_loopback_unless_allowed(receiver: int) -> None:
    with pytest.raises(UnsafeURL, match="loopback"):
        netguard.send("POST", f"http://127.0.0.1:{receiver}/", body=b"", headers={}, timeout=5)
    assert _Receiver.seen == []


def test_send_does_not_follow_redirects(receiver: int) -> None:
    resp = netguard.send("POST", f"http://127.0.0.1:{receiver}/redirect", body=b"{}", headers={},
                         timeout=5, allow_private=True)
    assert resp.status == 302 and len(_Receiver.seen) == 1


def test_the_pinned_adapter_refuses_any_other_host() -> None:
    target = check_url("http://hooks.example.test:8080/")
    with requests.Session() as session:
        session.mount("http://", netguard.PinnedAdapter(target, ipaddress.ip_address("127.0.0.1")))
        with pytest.raises(requests.exceptions.InvalidURL, match=r"only http://hooks\.example\.test"):
            session.get("http://other.example.test:8080/", timeout=1)


def test_connection_errors_surface_as_requests_exceptions() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(requests.exceptions.ConnectionError):
            netguard.send("POST", f"http://127.0.0.1:{port}/", body=b"", headers={}, timeout=2,
                          allow_private=True)


# --- TLS: pinning keeps SNI and certificate checks on the host name -----------------------------

def _self_signed(directory: Any, name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name`` (its own CA), as PEM files (cert, key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_receiver(tmp_path: Any) -> Iterator[tuple[int, str, list[str]]]:
    import ssl

    cert, key = _self_signed(tmp_path, "hooks.example.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.seen = []
    yield server.server_address[1], cert, sni
    server.shutdown()
    server.server_close()


def _to_loopback(host: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def test_https_to_a_pinned_address_verifies_the_certificate_of_the_host_name(
        tls_receiver: tuple[int, str, list[str]]) -> None:
    port, ca, sni = tls_receiver
    resp = netguard.send("POST", f"https://hooks.example.test:{port}/tls", body=b"{}", headers={},
                         timeout=5, allow_private=True, verify=ca, resolver=_to_loopback)
    assert resp.status == 200 and resp.address == "127.0.0.1"
    assert sni == ["hooks.example.test"]
    assert _Receiver.seen[0][1]["Host"] == f"hooks.example.test:{port}"


def test_https_refuses_a_certificate_for_another_name(tls_receiver: tuple[int, str, list[str]]) -> None:
    port, ca, _sni = tls_receiver
    with pytest.raises(requests.exceptions.SSLError):
        netguard.send("POST", f"https://other.example.test:{port}/tls", body=b"{}", headers={},
                      timeout=5, allow_private=True, verify=ca, resolver=_to_loopback)
    assert _Receiver.seen == []


def test_a_stalling_body_does_not_turn_an_answer_into_a_failure(receiver: int) -> None:
    started = time.monotonic()
    resp = netguard.send("POST", f"http://127.0.0.1:{receiver}/stall", body=b"{}", headers={},
                         timeout=0.5, allow_private=True)
    assert (resp.status, resp.body) == (200, b"partial")
    assert time.monotonic() - started < 1.9
