"""Reading API credentials from the Authorization header (gitserver.api.auth)."""

from __future__ import annotations

import base64

import pytest

from gitserver.api.auth import token_from_header
from gitserver.policy.errors import Unauthenticated


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "token"), [
    (None, None),
    ("", None),
    ("   ", None),
    ("Bearer gst_abc", "gst_abc"),
    ("bearer   gst_abc  ", "gst_abc"),
    (basic("git:gst_abc"), "gst_abc"),
    (basic("anything:gst:with:colons"), "gst:with:colons"),
])
def test_token_found(header: str | None, token: str | None) -> None:
    assert token_from_header(header) == token


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token gst_abc", "gst_abc", "Basic !!!",
                                    basic("no-colon"), basic("user:"),
                                    "Basic " + base64.b64encode(b"\xff:\xfe").decode(), "Digest username=x"])
def test_unusable_header_is_401_not_anonymous(header: str) -> None:
    with pytest.raises(Unauthenticated):
        token_from_header(header)


def test_oidc_token_principal_from_roles() -> None:
    # A real SQLite session for the tenant lookup; the issuer's documents come from a function.
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from gitserver.api.auth import principal_for_jwt
    from gitserver.db import models
    from gitserver.db.base import Base
    from gitserver.identity import oidc
    from gitserver.policy.errors import Forbidden
    from tests.oidc_issuer import Issuer

    issuer = Issuer()
    role_map = oidc.parse_role_map(["pnc-app-repour-user=site-admin", "builder=tenant-admin:jboss",
                                    "ghost=tenant-admin:nowhere"])
    verifier = oidc.OidcVerifier(issuer.url, "gitserver", role_map=role_map, fetch=issuer.fetch)
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(models.Tenant(name="jboss", description=""))
        session.flush()
        admin = principal_for_jwt(session, verifier, issuer.token())
        assert admin.is_site_admin and admin.user_name == "oidc:service-account-pnc"
        assert admin.token_expires_at is not None
        tenant_admin = principal_for_jwt(session, verifier, issuer.token(roles=("builder",)))
        assert tenant_admin.tenant_name == "jboss" and not tenant_admin.is_site_admin
        assert tenant_admin.is_tenant_admin(tenant_admin.tenant_id or 0)
        with pytest.raises(Forbidden, match="'nowhere', which does not exist"):
            principal_for_jwt(session, verifier, issuer.token(roles=("ghost",)))
        with pytest.raises(Forbidden, match="oidc_role_map"):
            principal_for_jwt(session, verifier, issuer.token(roles=("offline_access",)))
