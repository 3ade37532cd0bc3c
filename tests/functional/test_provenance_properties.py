"""The organisation's SLSA Source properties (``ORG_SOURCE_*``) end to end, on SQLite and
PostgreSQL: a rule list that declares them (``properties``, set over the API), a real push over
OpenSSH, and the Source VSA of that push's attestation as ``…/attestations/{commit}`` serves it
(envelopes checked with securesystemslib, not our code): the governed branch's VSA carries the
rule's properties, a ref another rule governs carries that rule's (none), and a bad name is
refused with the field named."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import requests

from tests.functional.conftest import GitServer, commit_files, make_repo
from tests.functional.test_provenance import _http_url, _push, _verify
from tests.functional.test_ref_rules import put_rules, rules_url

VSA = "https://slsa.dev/verification_summary/v1"
MAIN_PROPERTIES = ["ORG_SOURCE_RELEASE_BRANCH", "ORG_SOURCE_SIGNOFF_2"]


def _vsas(server: GitServer, tenant: str, repo: str, commit: str) -> dict[str, dict[str, Any]]:
    """The commit's VSAs by the ref they are about, each envelope verified with securesystemslib."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    resp = server.api("GET", f"/api/v1/tenants/{tenant}/repos/{repo}/attestations/{commit}", token="")
    assert resp.status_code == 200, resp.text
    [published] = requests.get(server.http_url + "/api/v1/signing-keys", timeout=10).json()["keys"][-1:]
    raw = base64.b64decode(published["public_key"].split()[1])[-32:]
    key = SSlibKey(published["fingerprint"], "ed25519", "ed25519", {"public": raw.hex()})
    found = {}
    for line in resp.text.splitlines():
        envelope = Envelope.from_dict(json.loads(line))
        assert list(envelope.verify([key], 1)) == [published["fingerprint"]]
        statement = json.loads(envelope.payload)
        if statement["predicateType"] == VSA:
            [ref] = statement["predicate"]["source_refs"]
            found[ref] = statement["predicate"]
    return found


def test_the_rules_properties_are_in_the_vsa_of_the_next_push(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, visibility="public", grants={user.name: "write"})
    path = rules_url(tenant, repo)
    for bad, field in (([{"pattern": "refs/heads/main", "properties": ["release"]}], "rules.0.properties.0"),
                       ([{"pattern": "refs/heads/main", "properties": ["SLSA_SOURCE_LEVEL_4"]}],
                        "rules.0.properties.0"),
                       ([{"pattern": "refs/heads/*", "properties": "ORG_SOURCE_X"}], "rules.0.properties")):
        resp = server.api("PUT", path, json=bad)
        assert resp.status_code == 400 and field in resp.text, resp.text
    work = make_repo(tmp_path / "work", server.git_env)
    server.git(user, "remote", "add", "origin", server.repo_url(tenant, repo), cwd=work)
    _push(server, user, work, "main")  # before the rules: the VSA has the level alone
    before = commit_files(work, server.git_env, {"a.txt": "0\n"})
    _push(server, user, work, "main")
    assert _vsas(server, tenant, repo, before)["refs/heads/main"]["verifiedLevels"] == ["SLSA_SOURCE_LEVEL_3"]

    ruleset = put_rules(server, path, [{"pattern": "refs/heads/main", "properties": MAIN_PROPERTIES},
                                       {"pattern": "refs/tags/*", "linear": True}])
    assert ruleset["rules"][0]["properties"] == MAIN_PROPERTIES
    commit = commit_files(work, server.git_env, {"a.txt": "1\n"})
    server.git(user, "tag", "-a", "-m", "v1", "v1", cwd=work)
    server.git(user, "branch", "topic", cwd=work)
    _push(server, user, work, "main", "v1", "topic")
    vsas = _vsas(server, tenant, repo, commit)
    assert vsas["refs/heads/main"]["verifiedLevels"] == ["SLSA_SOURCE_LEVEL_3", *MAIN_PROPERTIES]
    assert vsas["refs/tags/v1"]["verifiedLevels"] == ["SLSA_SOURCE_LEVEL_3"]  # its rule gives none
    assert vsas["refs/heads/topic"]["verifiedLevels"] == ["SLSA_SOURCE_LEVEL_3"]  # no rule governs it
    assert _verify(server, _http_url(server, tenant, repo)).returncode == 0
