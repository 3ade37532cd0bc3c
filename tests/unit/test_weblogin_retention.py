"""The web console's dead sign-in records are deleted and the live ones stay, on both
databases (gitserver.identity.weblogin_retention)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from gitserver.db import models
from gitserver.db.session import transaction
from gitserver.identity import weblogin, weblogin_retention
from gitserver.runtime import Runtime
from tests.unit.conftest import add_repo

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _user(runtime: Runtime) -> int:
    with transaction(runtime.sessions) as session:
        repo = add_repo(session)
        user = models.User(tenant_id=repo.tenant_id, name="ann")
        session.add(user)
        session.flush()
        return user.id


def _count(runtime: Runtime, table: type[models.ConsoleLogin] | type[models.ConsoleSession]) -> int:
    with transaction(runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_used_and_expired_links_and_ended_and_expired_sessions_go(runtime: Runtime) -> None:
    user_id = _user(runtime)
    past = NOW - dt.timedelta(hours=13)
    with transaction(runtime.sessions) as session:
        user = session.get(models.User, user_id)
        assert user is not None
        live_link = weblogin.create_link(session, user, NOW)
        used_link = weblogin.create_link(session, user, NOW)
        weblogin.create_link(session, user, past)  # expired long ago, never used
        live = weblogin.open_session(session, user, NOW)
        ended = weblogin.open_session(session, user, NOW)
        weblogin.open_session(session, user, past)  # expired
    with transaction(runtime.sessions) as session:
        assert weblogin.redeem(session, used_link, NOW) is not None
        row = weblogin.find_session(session, ended.secret, NOW)
        assert row is not None
        weblogin.end_session(row, NOW)
    assert (_count(runtime, models.ConsoleLogin), _count(runtime, models.ConsoleSession)) == (3, 3)

    pruned = weblogin_retention.prune(runtime.sessions, NOW)

    assert pruned == weblogin_retention.Pruned(links=2, sessions=2)
    assert (_count(runtime, models.ConsoleLogin), _count(runtime, models.ConsoleSession)) == (1, 1)
    with transaction(runtime.sessions) as session:  # the live ones still work
        assert weblogin.find_session(session, live.secret, NOW) is not None
        assert weblogin.redeem(session, live_link, NOW) is not None
    assert weblogin_retention.prune(runtime.sessions, NOW) == weblogin_retention.Pruned(links=1, sessions=0)
    later = NOW + weblogin.SESSION_LIFETIME
    assert weblogin_retention.prune(runtime.sessions, later) == weblogin_retention.Pruned(links=0, sessions=1)


def test_a_pass_is_bounded_and_the_next_one_goes_on(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weblogin_retention, "BATCH", 3)
    monkeypatch.setattr(weblogin_retention, "MAX_BATCHES", 2)
    user_id = _user(runtime)
    with transaction(runtime.sessions) as session:
        user = session.get(models.User, user_id)
        assert user is not None
        for _ in range(8):
            weblogin.create_link(session, user, NOW - dt.timedelta(hours=1))
    assert weblogin_retention.prune(runtime.sessions, NOW).links == 6  # two batches of three
    assert _count(runtime, models.ConsoleLogin) == 2
    assert weblogin_retention.prune(runtime.sessions, NOW).links == 2
    assert _count(runtime, models.ConsoleLogin) == 0
