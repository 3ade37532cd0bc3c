"""Reqour's face: its request bodies (tests/fixtures/pnc, from pnc-api's reqour DTOs as dingrogu
builds them) in Repour's spelling, and Repour outcomes in Reqour's response shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitserver.repour import reqour

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pnc"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("op, name, is_reqour", [
    ("adjust", "reqour-adjust-request.json", True), ("adjust", "adjust-request.json", False),
    ("clone", "reqour-clone-request.json", True), ("clone", "clone-request.json", False),
    ("internal-scm", "reqour-internal-scm-request.json", True), ("internal-scm", "internal-scm-request.json", False),
    ("external-to-internal", "reqour-translate-request.json", True),
])
def test_is_reqour_body(op: str, name: str, is_reqour: bool) -> None:
    assert reqour.is_reqour_body(op, fixture(name)) is is_reqour


def test_adjust_request_translation() -> None:
    spec = reqour.to_repour_spec("adjust", fixture("reqour-adjust-request.json"))
    assert spec["internal_url"] == {"readwrite": "ssh://git@127.0.0.1:2222/project-ncl/dingrogu.git",
                                    "readonly": "http://127.0.0.1:8080/git/project-ncl/dingrogu.git"}
    assert spec["adjustParameters"]["ALIGNMENT_PARAMETERS"] == "-DdependencyOverride.org.example:*@*="
    assert spec["defaultAlignmentParams"].startswith("-DdependencySource=REST")
    assert "internalUrl" not in spec and "buildConfigParameters" not in spec
    assert spec["taskId"] == "1234568" and spec["callback"]["uri"].endswith("/callback")


def test_clone_scm_translate_translation() -> None:
    assert reqour.to_repour_spec("clone", fixture("reqour-clone-request.json"))["type"] == "git"
    assert reqour.to_repour_spec("internal-scm", fixture("reqour-internal-scm-request.json"))["owner_groups"] == []
    assert reqour.to_repour_spec("external-to-internal", fixture("reqour-translate-request.json")) == {
        "external_url": "https://github.com/project-ncl/dingrogu.git"}


ADJUST_RESULT = {"tag": "1.4.0.redhat-00001", "commit": "c" * 40, "upstream_commit": "u" * 40,
                 "url": {"readwrite": "rw", "readonly": "ro"}, "is_ref_revision_internal": True,
                 "adjustResultData": {"VersioningState": {"executionRootModified": {
                     "groupId": "org.jboss", "artifactId": "demo", "version": "1.4.0.redhat-00001"}},
                     "RemovedRepositories": []}}


def test_adjust_response_success_and_failure() -> None:
    spec = reqour.to_repour_spec("adjust", fixture("reqour-adjust-request.json"))
    ok = reqour.callback_body("adjust", spec, 200, ADJUST_RESULT)
    assert ok == {"tag": "1.4.0.redhat-00001", "downstreamCommit": "c" * 40, "upstreamCommit": "u" * 40,
                  "isRefRevisionInternal": True,
                  "internalUrl": {"readonlyUrl": spec["internal_url"]["readonly"],
                                  "readwriteUrl": spec["internal_url"]["readwrite"]},
                  "manipulatorResult": {"versioningState": {"executionRootName": "org.jboss:demo",
                                                            "executionRootVersion": "1.4.0.redhat-00001"},
                                        "removedRepositories": []},
                  "callback": {"status": "SUCCESS", "id": "1234568"}}
    failed = reqour.callback_body("adjust", spec, 400, {"desc": "ref 'x' not found"})
    assert failed["callback"]["status"] == "FAILED" and failed["callback"]["exceptionResolution"]["reason"] == \
        "ref 'x' not found"
    assert reqour.callback_body("adjust", spec, 500, {"error_type": "InternalError"})["callback"]["status"] == \
        "SYSTEM_ERROR"


@pytest.mark.parametrize("gav, build_type, name", [
    ({"groupId": "org.jboss", "artifactId": "demo"}, "MVN", "org.jboss:demo"),
    ({"groupId": None, "artifactId": "demo"}, "GRADLE", "demo"),
    ({"groupId": None, "artifactId": "@redhat/artifactId"}, "NPM", "redhat-artifactId-npm"),
])
def test_execution_root_name(gav: dict, build_type: str, name: str) -> None:
    assert reqour.execution_root_name(gav, build_type) == name


def test_internal_scm_and_clone_and_cancel_responses() -> None:
    scm = reqour.callback_body("internal-scm", {"taskId": "7"}, 200,
                               {"status": "SUCCESS_CREATED", "readonly_url": "ro", "readwrite_url": "rw"})
    assert scm == {"readonlyUrl": "ro", "readwriteUrl": "rw", "status": "SUCCESS_CREATED",
                   "callback": {"status": "SUCCESS", "id": "7"}}
    clone = reqour.callback_body("clone", {"originRepoUrl": "o", "targetRepoUrl": "t", "ref": None,
                                           "taskId": "8"}, 200, {})
    assert clone == {"originRepoUrl": "o", "targetRepoUrl": "t", "ref": None,
                     "callback": {"status": "SUCCESS", "id": "8"}}
    assert reqour.callback_body("cancel", {"taskId": "9"}, None, {})["callback"]["status"] == "CANCELLED"
