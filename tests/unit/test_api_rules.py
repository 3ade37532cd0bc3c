"""Who may administer what through the API (the pure check_* rules in gitserver.admin)."""

from __future__ import annotations

import pytest

from gitserver.admin import audit, rules
from gitserver.policy import access
from gitserver.policy.errors import Forbidden, InvalidInput

T, OTHER = 1, 2
SITE = access.Principal(kind="site_admin")
SITE_USER = access.Principal(kind="user", user_id=1, tenant_id=OTHER, role="site-admin")
TENANT_ADMIN = access.Principal(kind="user", user_id=2, tenant_id=T, role="admin")
MEMBER = access.Principal(kind="user", user_id=3, tenant_id=T, role="member")
OTHER_ADMIN = access.Principal(kind="user", user_id=4, tenant_id=OTHER, role="admin")
ANON = access.ANONYMOUS
PRINCIPALS = {"site": SITE, "site_user": SITE_USER, "tenant_admin": TENANT_ADMIN, "member": MEMBER,
              "other_admin": OTHER_ADMIN, "anonymous": ANON}


def outcome(fn, *args) -> str:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except Forbidden:
        return "forbidden"
    except InvalidInput:
        return "invalid"
    return "ok"


@pytest.mark.parametrize(("who", "role", "expected"), [
    ("site", "site-admin", "ok"), ("site_user", "site-admin", "ok"),
    ("tenant_admin", "site-admin", "forbidden"), ("tenant_admin", "admin", "ok"),
    ("tenant_admin", "member", "ok"), ("member", "site-admin", "forbidden"),
    ("site", "root", "invalid"),
])
def test_role_assignment(who: str, role: str, expected: str) -> None:
    assert outcome(rules.check_role_assignable, PRINCIPALS[who], role) == expected


@pytest.mark.parametrize(("who", "target_tenant", "target_role", "expected"), [
    ("site", T, "member", "ok"),
    ("site", T, "site-admin", "ok"),
    ("tenant_admin", T, "member", "ok"),
    ("tenant_admin", T, "admin", "ok"),
    ("tenant_admin", T, "site-admin", "forbidden"),
    ("tenant_admin", OTHER, "member", "forbidden"),
    ("member", T, "member", "forbidden"),
    ("other_admin", T, "member", "forbidden"),
    ("anonymous", T, "member", "forbidden"),
])
def test_user_management(who: str, target_tenant: int, target_role: str, expected: str) -> None:
    assert outcome(rules.check_user_manageable, PRINCIPALS[who], target_tenant, target_role) == expected


@pytest.mark.parametrize(("who", "target_id", "expected"), [
    ("member", MEMBER.user_id, "ok"),          # own keys and tokens
    ("member", TENANT_ADMIN.user_id, "forbidden"),
    ("tenant_admin", MEMBER.user_id, "ok"),
    ("other_admin", MEMBER.user_id, "forbidden"),
])
def test_self_service(who: str, target_id: int, expected: str) -> None:
    assert outcome(rules.check_self_or_manager, PRINCIPALS[who], target_id, T, "member") == expected


@pytest.mark.parametrize(("held", "requested", "expected"), [
    ("admin", "admin", "ok"), ("admin", "read", "ok"), ("write", "write", "ok"),
    ("write", "admin", "forbidden"), ("read", "write", "forbidden"), (None, "read", "forbidden"),
    ("admin", "owner", "invalid"),
])
def test_nobody_grants_more_than_they_hold(held: str | None, requested: str, expected: str) -> None:
    assert outcome(rules.check_grantable, held, requested) == expected


@pytest.mark.parametrize(("held", "requested", "expected"), [
    (None, ("read", "write", "admin"), "ok"),
    (frozenset({"admin"}), ("read",), "ok"),
    (frozenset({"read"}), ("read",), "ok"),
    (frozenset({"read"}), ("read", "write"), "forbidden"),
    (frozenset({"write"}), ("admin",), "forbidden"),
])
def test_tokens_cannot_mint_wider_tokens(held: frozenset[str] | None, requested: tuple[str, ...],
                                         expected: str) -> None:
    assert outcome(rules.check_scopes_grantable, held, requested) == expected


_SOON = __import__("datetime").datetime(2031, 1, 1, tzinfo=__import__("datetime").timezone.utc)
_LATER = _SOON.replace(year=2032)


@pytest.mark.parametrize(("held", "requested", "expected"), [
    (None, None, None),            # an unlimited token mints what it asks for
    (None, _LATER, _LATER),
    (_SOON, None, _SOON),          # by default a new token expires with the one that made it
    (_SOON, _SOON, _SOON),
    (_LATER, _SOON, _SOON),
    (_SOON, _LATER, "forbidden"),  # never outlives it
])
def test_tokens_cannot_mint_longer_lived_tokens(held, requested, expected) -> None:  # type: ignore[no-untyped-def]
    try:
        got = rules.check_expiry_grantable(held, requested)
    except Forbidden as exc:
        assert exc.field == "expires_at"
        got = "forbidden"
    assert got == expected


@pytest.mark.parametrize(("ref", "candidates"), [
    ("main", ["main", "refs/heads/main", "refs/tags/main"]),
    ("refs/heads/main", ["refs/heads/main"]),
    ("v1.0", ["v1.0", "refs/heads/v1.0", "refs/tags/v1.0"]),
])
def test_ref_filter(ref: str, candidates: list[str]) -> None:
    assert audit.ref_candidates(ref) == candidates
