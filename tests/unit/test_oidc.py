"""OIDC bearer tokens: verification through a JWKS (no sockets: the issuer's documents come from
a function), key rotation, the reasons a token is refused, and the role mapping."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gitserver.identity import oidc
from gitserver.policy.errors import ConfigError, Unauthenticated, Unavailable
from tests.oidc_issuer import Issuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(issuer: Issuer, clock: Clock | None = None, **kwargs: object) -> tuple[oidc.OidcVerifier, list[str]]:
    fetched: list[str] = []

    def fetch(url: str, timeout: float) -> object:
        fetched.append(url)
        return issuer.fetch(url, timeout)

    verifier = oidc.OidcVerifier(issuer.url, "gitserver", fetch=fetch, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]
    return verifier, fetched


def test_valid_token_gives_its_claims() -> None:
    issuer = Issuer()
    verifier, fetched = make(issuer)
    claims = verifier.verify(issuer.token())
    assert claims["sub"] == "service-account-pnc"
    assert fetched == [issuer.url + "/.well-known/openid-configuration", issuer.discovery()["jwks_uri"]]
    verifier.verify(issuer.token())
    assert len(fetched) == 2, "keys are cached"


@pytest.mark.parametrize("change, reason", [
    (dict(audience="someone-else"), "not meant for this server"),
    (dict(lifetime=-120), "has expired"),
    (dict(iss="https://evil.example.org/realms/pnc"), "was not issued by"),
    (dict(nbf=4102444800), "not valid yet"),
])
def test_refusals_name_the_reason(change: dict[str, object], reason: str) -> None:
    issuer = Issuer()
    verifier, _ = make(issuer)
    with pytest.raises(Unauthenticated, match=reason):
        verifier.verify(issuer.token(**change))  # type: ignore[arg-type]


def test_wrong_signature_and_algorithm() -> None:
    issuer = Issuer()
    verifier, _ = make(issuer)
    forged = issuer.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        verifier.verify(forged)
    import jwt

    hs = jwt.encode({"iss": issuer.url, "aud": "gitserver", "exp": 4102444800}, "s" * 32, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="only RS256"):
        verifier.verify(hs)
    with pytest.raises(Unauthenticated, match="not a valid JWT"):
        verifier.verify("a.b.c")


@pytest.mark.parametrize("header, reason", [
    ({"kid": 5}, "Key ID header parameter must be a string"),
    ({"kid": ["a"]}, "Key ID header parameter must be a string"),
    ({"crit": ["exp"]}, "Unsupported critical extension"),
    ({"crit": "b64"}, "'crit' header"),
    ({"crit": ["b64"], "b64": False}, "'b64' is false"),
])
def test_malformed_headers_are_refused_not_errors(header: dict[str, object], reason: str) -> None:
    # Issue 21: PyJWT raises InvalidTokenError (not DecodeError) for these; that was a 500.
    issuer = Issuer()
    verifier, _ = make(issuer)
    with pytest.raises(Unauthenticated, match=reason):
        verifier.verify(issuer.raw_token({"kid": issuer.kid, **header}))


@pytest.mark.parametrize("claim, value", [
    ("exp", "4102444800"), ("iat", True), ("exp", 10 ** 20), ("exp", 1e300), ("nbf", "0"), ("iat", "1"),
])
def test_numeric_dates_must_be_numbers(claim: str, value: object) -> None:
    # A string exp passes PyJWT (it calls int()), and read as "no expiry" by the caller it made
    # a minted token never expire.
    issuer = Issuer()
    verifier, _ = make(issuer)
    with pytest.raises(Unauthenticated, match=f"'{claim}' claim must be a number"):
        verifier.verify(issuer.raw_token({"kid": issuer.kid}, **{claim: value}))
    assert verifier.verify(issuer.raw_token({"kid": issuer.kid}))["sub"] == "service-account-pnc"


def test_unknown_kid_refreshes_the_keys_but_not_too_often() -> None:
    issuer, clock = Issuer(), Clock()
    verifier, fetched = make(issuer, clock)
    verifier.verify(issuer.token())
    issuer.rotate()
    clock.now += 0.5
    with pytest.raises(Unauthenticated, match="is not one of the issuer's keys"):
        verifier.verify(issuer.token())  # refreshed less than MIN_REFRESH_SECONDS ago
    assert len(fetched) == 2
    clock.now += oidc.MIN_REFRESH_SECONDS
    assert verifier.verify(issuer.token())["sub"] == "service-account-pnc"
    assert fetched[-1] == issuer.discovery()["jwks_uri"] and len(fetched) == 3
    with pytest.raises(Unauthenticated, match="is not one of the issuer's keys"):
        verifier.verify(issuer.token(kid="made-up", key=issuer.keys[issuer.kid]))
    assert len(fetched) == 3, "a made-up kid right after a refresh fetches nothing"


def test_unreachable_issuer_is_unavailable_not_a_bad_token() -> None:
    issuer, clock = Issuer(), Clock()
    calls: list[str] = []

    def down(url: str, timeout: float) -> object:
        calls.append(url)
        raise OSError("refused")

    verifier = oidc.OidcVerifier(issuer.url, "gitserver", fetch=down, clock=clock)
    with pytest.raises(Unavailable, match="could not be fetched"):
        verifier.verify(issuer.token())
    with pytest.raises(Unavailable, match="try again shortly"):
        verifier.verify(issuer.token())
    assert len(calls) == 1, "an unreachable issuer is not asked again at once"
    clock.now += oidc.MIN_REFRESH_SECONDS
    with pytest.raises(Unavailable, match="could not be fetched"):
        verifier.verify(issuer.token())


def test_keys_survive_an_issuer_outage() -> None:
    issuer, clock = Issuer(), Clock()
    up = [True]

    def fetch(url: str, timeout: float) -> object:
        if not up[0]:
            raise OSError("refused")
        return issuer.fetch(url, timeout)

    verifier = oidc.OidcVerifier(issuer.url, "gitserver", fetch=fetch, clock=clock)
    verifier.verify(issuer.token())
    up[0] = False
    clock.now += oidc.KEYS_TTL_SECONDS + 1
    assert verifier.verify(issuer.token())["sub"] == "service-account-pnc"


def test_discovery_must_name_the_issuer_and_its_own_host() -> None:
    issuer = Issuer()

    def fetch(url: str, timeout: float) -> object:
        if url.endswith("openid-configuration"):
            return {"issuer": issuer.url, "jwks_uri": "https://elsewhere.example.org/certs"}
        return issuer.jwks()

    with pytest.raises(Unavailable):
        oidc.OidcVerifier(issuer.url, "gitserver", fetch=fetch).verify(issuer.token())


@pytest.mark.parametrize("claims, expected", [
    ({"realm_access": {"roles": ["pnc-repour", "offline_access"]}}, oidc.Grant(site_admin=True)),
    ({"resource_access": {"pnc": {"roles": ["builder"]}}}, oidc.Grant(tenant_admin=("jboss",))),
    ({"realm_access": {"roles": ["offline_access"]}}, oidc.Grant()),
    ({"realm_access": "garbage", "resource_access": {"x": 1}}, oidc.Grant()),
])
def test_role_mapping(claims: dict[str, object], expected: oidc.Grant) -> None:
    role_map = oidc.parse_role_map(["pnc-repour=site-admin", "pnc:builder=tenant-admin:jboss"])
    assert oidc.grant_for_roles(oidc.token_roles(claims), role_map) == expected


@pytest.mark.parametrize("entry", ["no-equals", "=site-admin", "role=root", "role=tenant-admin:"])
def test_bad_role_map_entries(entry: str) -> None:
    with pytest.raises(ConfigError, match="oidc_role_map"):
        oidc.parse_role_map([entry])


@pytest.mark.parametrize("secret, is_jwt", [("gst_abc", False), ("a.b.c", True), ("a..c", False), ("x", False)])
def test_looks_like_jwt(secret: str, is_jwt: bool) -> None:
    assert oidc.looks_like_jwt(secret) is is_jwt


def test_issuer_url_rules() -> None:
    oidc.check_issuer_url("https://sso.example.org/realms/pnc", allow_http=False)
    oidc.check_issuer_url("http://127.0.0.1:8080/realms/pnc", allow_http=True)
    with pytest.raises(ConfigError, match="only allowed with allow_private_networks"):
        oidc.check_issuer_url("http://sso.example.org/realms/pnc", allow_http=False)
    with pytest.raises(ConfigError, match="expected an https URL"):
        oidc.check_issuer_url("sso.example.org", allow_http=False)
