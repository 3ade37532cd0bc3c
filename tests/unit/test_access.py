"""The one access decision (gitserver.policy.access.authorise) on a real database, SQLite and PostgreSQL.

One fixture world, built once per backend: tenant ``acme`` with a private, an internal and a
public repository, tenant ``other`` with a private one, and a principal of every kind the
policy knows (site admin, tenant admin, members with user and group grants, an outsider,
deploy keys, anonymous, scoped tokens). Every row of the table is one question a transport asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.session import make_engine, make_session_factory, upgrade
from gitserver.policy import access

R, W, A = access.READ, access.WRITE, access.ADMIN


def _build(session: Session) -> dict[str, access.Principal]:
    acme, other = models.Tenant(name="acme"), models.Tenant(name="other")
    session.add_all([acme, other])
    session.flush()
    repos = {name: models.Repository(tenant_id=acme.id, name=name, visibility=name)
             for name in ("private", "internal", "public")}
    repos["theirs"] = models.Repository(tenant_id=other.id, name="theirs", visibility="private")
    session.add_all(repos.values())
    users = {
        "site_user": models.User(tenant_id=other.id, name="root", role=models.ROLE_SITE_ADMIN),
        "tenant_admin": models.User(tenant_id=acme.id, name="boss", role=models.ROLE_ADMIN),
        "reader": models.User(tenant_id=acme.id, name="reader"),
        "writer": models.User(tenant_id=acme.id, name="writer"),
        "member": models.User(tenant_id=acme.id, name="member"),
        "outsider": models.User(tenant_id=other.id, name="outsider"),
        "other_admin": models.User(tenant_id=other.id, name="otherboss", role=models.ROLE_ADMIN),
    }
    session.add_all(users.values())
    session.flush()
    # reader: a direct read grant; writer: write through a group, and a weaker direct grant
    # (the strongest wins). The outsider holds a grant on a repository of another tenant:
    # grants never cross the tenant wall.
    group = models.Group(tenant_id=acme.id, name="devs")
    session.add(group)
    session.flush()
    session.add_all([
        models.Grant(repo_id=repos["private"].id, user_id=users["reader"].id, permission=R),
        models.Grant(repo_id=repos["private"].id, user_id=users["writer"].id, permission=R),
        models.Grant(repo_id=repos["private"].id, group_id=group.id, permission=W),
        models.GroupMember(group_id=group.id, user_id=users["writer"].id),
        models.Grant(repo_id=repos["private"].id, user_id=users["outsider"].id, permission=A),
    ])
    session.flush()
    principals = {name: access.principal_for_user(user) for name, user in users.items()}
    principals["writer_read_token"] = access.principal_for_user(users["writer"], scopes=frozenset({R}))
    principals["admin_write_token"] = access.principal_for_user(users["tenant_admin"], scopes=frozenset({W}))
    principals["site_token"] = access.Principal(kind="site_admin", scopes=frozenset({A}))
    principals["anonymous"] = access.ANONYMOUS
    for write in (False, True):
        principals["deploy_rw" if write else "deploy_ro"] = access.Principal(
            kind="deploy_key", key_id=1, tenant_id=acme.id, tenant_name="acme",
            deploy_repo_id=repos["private"].id, deploy_write=write)
    return principals


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Session, dict[str, access.Principal]]]:
    if request.param == "sqlite":
        url = f"sqlite:///{Path(tmp_path_factory.mktemp('access')) / 'test.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database()
    upgrade(url)
    engine = make_engine(url)
    session = make_session_factory(engine)()
    try:
        principals = _build(session)
        session.commit()
        yield session, principals
    finally:
        session.close()
        engine.dispose()


def outcome(session: Session, principal: access.Principal, target: str, need: str) -> str:
    """What the decision says, in the words of the table: the permission, or why not."""
    tenant, repo = target.split("/")
    try:
        granted = access.authorise(session, principal, tenant, repo, need)
    except access.RepoHidden:
        return "hidden"
    except access.PermissionTooLow:
        return "too low"
    except access.ScopeMissing:
        return "scope"
    assert granted.repo.name == repo.removesuffix(".git")
    return granted.permission


CASES = [
    # who, repository, need, answer
    ("site_user", "acme/private", A, A),
    ("site_user", "other/theirs", A, A),
    ("site_token", "acme/private", A, A),
    ("tenant_admin", "acme/private", A, A),
    ("tenant_admin", "other/theirs", R, "hidden"),
    ("other_admin", "acme/private", R, "hidden"),
    ("other_admin", "acme/internal", R, "hidden"),       # internal means: inside the tenant
    ("other_admin", "acme/public", R, R),
    ("reader", "acme/private", R, R),
    ("reader", "acme/private", W, "too low"),
    ("writer", "acme/private", W, W),                   # group write beats the direct read
    ("writer", "acme/private", A, "too low"),
    ("member", "acme/private", R, "hidden"),
    ("member", "acme/internal", R, R),
    ("member", "acme/internal", W, "too low"),
    ("member", "acme/public", R, R),
    ("outsider", "acme/private", R, "hidden"),          # its grant there does not count
    ("outsider", "acme/public", W, "too low"),
    ("anonymous", "acme/public", R, R),
    ("anonymous", "acme/public", W, "too low"),
    ("anonymous", "acme/internal", R, "hidden"),
    ("anonymous", "acme/private", R, "hidden"),
    ("deploy_ro", "acme/private", R, R),
    ("deploy_ro", "acme/private", W, "too low"),
    ("deploy_rw", "acme/private", W, W),
    ("deploy_rw", "acme/private", A, "too low"),
    ("deploy_rw", "acme/internal", R, "hidden"),        # a deploy key sees its repository only,
    ("deploy_rw", "acme/public", R, "hidden"),          # not even public ones
    ("writer_read_token", "acme/private", R, W),
    ("writer_read_token", "acme/private", W, "scope"),  # the permission is there, the token's scope not
    ("reader", "acme/private", A, "too low"),           # the permission is checked before the scope
    ("admin_write_token", "acme/private", W, A),
    ("admin_write_token", "acme/private", A, "scope"),
    # missing repositories and names that can never exist answer exactly like hidden ones
    ("site_user", "acme/nope", R, "hidden"),
    ("site_user", "nope/private", R, "hidden"),
    ("site_user", "acme/bad\x00name", R, "hidden"),
    ("site_user", "acme/" + "x" * 500, R, "hidden"),
    ("reader", "acme/private.git", R, R),              # the clone URL's .git is accepted
]


@pytest.mark.parametrize(("who", "target", "need", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1][:20]}-{c[2]}" for c in CASES])
def test_authorise(world: tuple[Session, dict[str, access.Principal]], who: str, target: str,
                   need: str, expected: str) -> None:
    session, principals = world
    assert outcome(session, principals[who], target, need) == expected
    row = access.find_repo(session, *target.split("/"))
    if row is not None:  # the yes/no form, for filters, agrees
        assert access.allows(session, principals[who], row, need) is (expected in (R, W, A))


def test_hidden_and_missing_read_the_same(world: tuple[Session, dict[str, access.Principal]]) -> None:
    """The tenant wall: nothing in the answer tells a hidden repository from a missing one."""
    session, principals = world
    answers = []
    for repo in ("private", "nope"):
        with pytest.raises(access.RepoHidden) as caught:
            access.authorise(session, principals["outsider"], "acme", repo + ".git", R)
        answers.append((caught.value.status, caught.value.code, caught.value.message.replace(repo, "*")))
    assert answers[0] == answers[1] == (404, "not_found", "repository acme/* not found")


def test_refusals_name_what_is_needed(world: tuple[Session, dict[str, access.Principal]]) -> None:
    session, principals = world
    with pytest.raises(access.PermissionTooLow) as low:
        access.authorise(session, principals["reader"], "acme", "private", W)
    assert (low.value.status, low.value.message) == (403, "you have read access to acme/private; this needs write")
    assert (low.value.permission, low.value.need) == (R, W)
    with pytest.raises(access.ScopeMissing) as scope:
        access.authorise(session, principals["writer_read_token"], "acme", "private", W)
    assert (scope.value.status, scope.value.message) == (403, "this token lacks the 'write' scope")


def test_the_listing_shows_exactly_what_authorise_lets_read(
        world: tuple[Session, dict[str, access.Principal]]) -> None:
    """readable_repos (one SQL query, for listings) and authorise (per repository) are two
    forms of one rule: for every principal they must name the same repositories."""
    session, principals = world
    tenants = {t.name: t.id for t in session.scalars(select(models.Tenant))}
    for who, principal in principals.items():
        for tenant, tenant_id in tenants.items():
            listed = {r.name for r in session.scalars(access.readable_repos(principal, tenant_id))}
            names = session.scalars(select(models.Repository.name).where(models.Repository.tenant_id == tenant_id))
            readable = {name for name in names if outcome(session, principal, f"{tenant}/{name}", R) != "hidden"}
            assert listed == readable, (who, tenant)


@pytest.mark.parametrize(("held", "need", "expected"), [
    (None, A, True), (frozenset(), R, False), (frozenset({R}), R, True), (frozenset({R}), W, False),
    (frozenset({W}), R, True), (frozenset({W}), A, False), (frozenset({A}), W, True),
    (frozenset({"bogus"}), R, False),
])
def test_token_scopes_are_ordered(held: frozenset[str] | None, need: str, expected: bool) -> None:
    assert access.scope_covers(held, need) is expected
