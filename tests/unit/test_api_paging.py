"""Keyset pagination (gitserver.api.paging): limits, opaque cursors, stable pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from gitserver.api.paging import DEFAULT_LIMIT, decode_cursor, encode_cursor, page, parse_limit
from gitserver.db import models
from gitserver.db.base import Base
from gitserver.policy.errors import InvalidInput


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT_LIMIT), ("", DEFAULT_LIMIT), ("1", 1),
                                                 ("100", 100), ("007", 7)])
def test_limit_accepted(value: str | None, expected: int) -> None:
    assert parse_limit(value) == expected


@pytest.mark.parametrize("value", ["0", "101", "-1", "1.5", "ten", "1e2", " 5", "٣", "9" * 400])
def test_limit_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_limit(value)
    assert info.value.field == "limit"


@pytest.mark.parametrize("descending", [False, True])
def test_cursor_round_trip(descending: bool) -> None:
    assert decode_cursor(encode_cursor(1234, descending), descending) == 1234


@pytest.mark.parametrize("cursor", ["", "garbage", "djE6YTox!!", encode_cursor(5, True),
                                    "djI6YTox",  # v2:a:1 — another version
                                    "djE6YTotMQ"])  # v1:a:-1
def test_foreign_or_tampered_cursor_refused(cursor: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_cursor(cursor, descending=False)
    assert info.value.field == "cursor"


class FakeRequest:
    """The two query parameters page() reads."""

    def __init__(self, **params: str) -> None:
        self.params = params

    def get_param(self, name: str) -> str | None:
        return self.params.get(name)


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(models.Tenant(name=f"t{i}") for i in range(7))
        session.flush()
        yield session


def _walk(session: Session, descending: bool, limit: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        result: dict[str, Any] = page(session, select(models.Tenant), models.Tenant.id,
                                      FakeRequest(**params), serialize=lambda t: t.name,  # type: ignore[arg-type]
                                      descending=descending)
        pages.append(result["items"])
        cursor = result["next"]
        if cursor is None:
            return pages


def test_pages_cover_every_row_once_in_order(session: Session) -> None:
    assert _walk(session, False, "3") == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert _walk(session, True, "3") == [["t6", "t5", "t4"], ["t3", "t2", "t1"], ["t0"]]
    assert _walk(session, False, "7") == [[f"t{i}" for i in range(7)]]


def test_row_added_between_pages_does_not_shift_later_pages(session: Session) -> None:
    first = page(session, select(models.Tenant), models.Tenant.id, FakeRequest(limit="4"),  # type: ignore[arg-type]
                 serialize=lambda t: t.name)
    session.add(models.Tenant(name="late"))
    session.flush()
    rest = page(session, select(models.Tenant), models.Tenant.id,
                FakeRequest(limit="10", cursor=first["next"]), serialize=lambda t: t.name)  # type: ignore[arg-type]
    assert first["items"] == ["t0", "t1", "t2", "t3"]
    assert rest == {"items": ["t4", "t5", "t6", "late"], "next": None}
