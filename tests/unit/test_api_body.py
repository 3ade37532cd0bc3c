"""JSON body validation: the allow-list every write endpoint uses (gitserver.api.body)."""

from __future__ import annotations

import json

import pytest

from gitserver.api.body import MAX_BODY_BYTES, Field, check_value, field_schema, json_schema, parse_object
from gitserver.policy.errors import InvalidInput
from gitserver.policy.names import validate_name

FIELDS = {
    "name": Field(str, required=True, check=validate_name),
    "description": Field(str, max_length=10),
    "write": Field(bool),
    "count": Field(int),
    "ratio": Field(float),
    "scopes": Field(list, items=str, choices=("read", "write"), max_length=2),
    "expires_at": Field(str, nullable=True),
}


def parse(body: object, **kwargs: object) -> dict[str, object]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_object(raw, FIELDS, **kwargs)  # type: ignore[arg-type]


def test_valid_body_returns_only_present_fields() -> None:
    assert parse({"name": "acme", "write": True}) == {"name": "acme", "write": True}
    assert parse({"name": "a", "expires_at": None, "ratio": 1}) == {"name": "a", "expires_at": None, "ratio": 1}
    assert parse({"name": "a", "scopes": ["read", "write"]})["scopes"] == ["read", "write"]


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"description": "x"}, "name", "name is required"),
    ({"name": "a", "visibilty": "public"}, "visibilty", "unknown field 'visibilty'"),
    ({"name": 5}, "name", "name must be a string"),
    ({"name": "a..b"}, "name", "must not contain '..'"),
    ({"name": "-rf"}, "name", "must match"),
    ({"name": "x.git"}, "name", "must not end in '.git'"),
    ({"name": "a", "write": "true"}, "write", "write must be a boolean"),
    ({"name": "a", "write": 1}, "write", "write must be a boolean"),
    ({"name": "a", "count": True}, "count", "count must be an integer"),
    ({"name": "a", "count": 1.5}, "count", "count must be an integer"),
    ({"name": "a", "ratio": "1"}, "ratio", "ratio must be a number"),
    ({"name": "a", "description": "x" * 11}, "description", "at most 10 characters"),
    ({"name": "a", "description": None}, "description", "must not be null"),
    ({"name": "a", "scopes": "read"}, "scopes", "scopes must be an array"),
    ({"name": "a", "scopes": [1]}, "scopes", "every item of scopes must be a string"),
    ({"name": "a", "scopes": ["root"]}, "scopes", "scopes must be one of read, write"),
    ({"name": "a", "scopes": ["read", "read", "read"]}, "scopes", "at most 2 items"),
    ([{"name": "a"}], "body", "must be a JSON object"),
    ("acme", "body", "must be a JSON object"),
])
def test_bad_bodies_name_the_field(body: object, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(body)
    assert info.value.field == field
    assert message in info.value.message


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "must be a JSON object"),
    (b"{", "not valid JSON"),
    (b'{"name": NaN}', "not valid JSON"),
    (b'{"name": Infinity}', "not valid JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"name": "' + b"a" * MAX_BODY_BYTES + b'"}', "larger than 1024 KiB"),
])
def test_malformed_bodies_are_refused_as_the_body(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(raw)
    assert info.value.field == "body"
    assert message in info.value.message


def test_empty_body_allowed_where_every_field_is_optional() -> None:
    assert parse_object(b"", {"name": Field(str)}, allow_empty=True) == {}
    assert parse_object(b"  \n", {"name": Field(str)}, allow_empty=True) == {}


def test_unknown_field_name_in_error_is_bounded() -> None:
    with pytest.raises(InvalidInput) as info:
        parse({"name": "a", "x" * 5000: 1})
    assert info.value.field is not None and len(info.value.field) <= 100


# --- nested fields (what Repour's bodies need) and the JSON schema of a field list ---------------

HEADER = Field(dict, fields={"name": Field(str, required=True), "value": Field(str, required=True)})
CALLBACK = Field(dict, fields={"url": Field(str), "uri": Field(str), "headers": Field(list, items=HEADER)},
                 exactly_one=("url", "uri"))


@pytest.mark.parametrize(("value", "problems"), [
    ({"url": "u"}, []),
    ({"uri": "u", "headers": [{"name": "a", "value": "b"}]}, []),
    ({}, [(("cb", "url"), "exactly_one")]),
    ({"url": "u", "uri": "v"}, [(("cb", "url"), "exactly_one")]),
    ({"url": 5, "x": 1}, [(("cb", "url"), "type"), (("cb", "x"), "extra")]),
    ({"url": "u", "headers": [{"name": "a"}, {"value": 1, "name": "b"}]},
     [(("cb", "headers", 0, "value"), "required"), (("cb", "headers", 1, "value"), "type")]),
    ("not an object", [(("cb",), "type")]),
    (None, [(("cb",), "null")]),
])
def test_nested_objects_report_every_problem_with_its_path(value: object, problems: list[tuple[object, str]]) -> None:
    assert [(p.path, p.code) for p in check_value(value, CALLBACK, ("cb",))[1]] == problems


def test_any_value_fields_are_decided_by_choices_and_checks() -> None:
    choice = Field(object, choices=("git",))
    assert check_value("git", choice)[1] == []
    assert [p.code for p in check_value(None, choice)[1]] == ["choice"]
    assert [p.code for p in check_value([], choice)[1]] == ["choice"]
    assert check_value(None, Field(object))[1] == []


@pytest.mark.parametrize(("field", "schema"), [
    (Field(str, max_length=10), {"type": "string", "maxLength": 10}),
    (Field(str, nullable=True, min_length=1), {"type": ["string", "null"], "minLength": 1}),
    (Field(list, items=str, choices=("a", "b"), max_length=2),
     {"type": "array", "maxItems": 2, "items": {"type": "string", "enum": ["a", "b"]}}),
    (Field(object, nullable=True, choices=("x",)), {"enum": ["x", None]}),
    (Field(object, nullable=True, doc={"type": "string"}, description="d"),
     {"description": "d", "type": ["string", "null"]}),
    (Field(int, doc={"minimum": 1}), {"type": "integer", "minimum": 1}),
    (HEADER, {"type": "object", "required": ["name", "value"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}),
])
def test_field_schema_says_what_the_checker_checks(field: Field, schema: dict[str, object]) -> None:
    assert field_schema(field) == schema


def test_json_schema_of_a_body() -> None:
    assert json_schema({"name": Field(str, required=True), "write": Field(bool)}) == {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "write": {"type": "boolean"}}}
    assert field_schema(CALLBACK)["oneOf"] == [{"required": ["url"]}, {"required": ["uri"]}]
