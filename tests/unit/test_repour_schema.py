"""Repour's bodies (gitserver.repour.schema) answer in voluptuous's words, as Repour does: each
rule's message, path and error type, from the same Field declarations the document shows."""

from __future__ import annotations

import pytest

from gitserver.repour import schema

ADJUST = {"ref": "main", "internal_url": {"readwrite": "ssh://git@h/t/r.git", "readonly": "http://h/git/t/r.git"}}
CALLBACK = {"url": "https://pnc.example.org/cb"}


@pytest.mark.parametrize(("change", "path", "message", "error_type"), [
    ({"ref": 5}, ["ref"], "expected str", "dictionary value"),
    ({"ref": None}, ["ref"], "expected str", "dictionary value"),
    ({"ref": ""}, ["ref"], "length of value must be at least 1", "dictionary value"),
    ({"ref": "x" * 2001}, ["ref"], "length of value must be at most 2000", "dictionary value"),
    ({"ref": "a\x00b"}, ["ref"], "NUL characters are not allowed", "dictionary value"),
    ({"sync": "yes"}, ["sync"], "expected bool", "dictionary value"),
    ({"adjustParameters": []}, ["adjustParameters"], "expected dict", "dictionary value"),
    ({"internal_url": "ssh://h/t/r.git"}, ["internal_url"], "expected a dictionary", "dictionary value"),
    ({"internal_url": {"readwrite": "ssh://h/t/r.git"}}, ["internal_url", "readonly"],
     "required key not provided", "required key"),
    ({"buildType": "ANT"}, ["buildType"], "not a valid value", "dictionary value"),
    ({"originRepoUrl": 7}, ["originRepoUrl"], "expected a URL: expected a git URL", "dictionary value"),
    ({"taskId": "x" * 201}, ["taskId"], "length of value must be at most 200", "dictionary value"),
    ({"extra": 1}, ["extra"], "extra keys not allowed", "extra key"),
    ({"callback": {"url": "https://a.example/cb", "uri": "https://b.example/cb"}}, ["callback", "url"],
     "exactly one of url, uri is required", "required key"),
    ({"callback": {**CALLBACK, "headers": [{"name": "bad name", "value": "v"}]}}, ["callback", "headers", 0, "name"],
     "expected an HTTP header name", "dictionary value"),
    ({"callback": {**CALLBACK, "headers": [{"name": "A", "value": "a\nb"}]}}, ["callback", "headers", 0, "value"],
     "expected one line of at most 8192 characters", "dictionary value"),
    ({"heartbeatConfig": {"request": CALLBACK, "delay": 0}}, ["heartbeatConfig", "delay"],
     "expected a positive number", "dictionary value"),
])
def test_adjust_errors_in_repours_words(change: dict[str, object], path: list[object], message: str,
                                        error_type: str) -> None:
    assert schema.ADJUST_SCHEMA(ADJUST, []) == []
    errors = schema.ADJUST_SCHEMA({**ADJUST, **change}, [])
    assert errors == [{"error_message": message, "error_type": error_type, "path": path,
                       "_error_message": message, "_path": path}]


def test_internal_scm_owner_groups_without_blanks() -> None:
    errors = schema.INTERNAL_SCM_SCHEMA({"project": "t/r", "owner_groups": ["a b"]}, [])
    assert [(e["path"], e["error_message"]) for e in errors] == [
        (["owner_groups", 0], "does not match regular expression ^\\S+$")]
    assert [e["error_message"] for e in schema.INTERNAL_SCM_SCHEMA({"project": "t/r", "owner_groups": "a"}, [])] \
        == ["expected list"]
