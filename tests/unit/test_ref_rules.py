"""The rule evaluation of gitserver.push.rules as a table: rule lists × refs × pushers ×
commits, each row the refusal a pusher reads (or None), and the pattern checks of
gitserver.policy.refrules."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitserver.policy.refrules import pattern_problem
from gitserver.push import rules
from gitserver.push.rules import BAD, SIGNED, UNSIGNED, CommitFacts, FileChange, Pusher, RuleSet
from gitserver.push.signatures import SshSigner, Verifier, allowed_signers, split_tag, tag_tagger_email

C1 = "1a2b3c4" + "d" * 33
C2 = "9f8e7d6" + "c" * 33
MIB = 1024 * 1024

ALICE = Pusher("alice", frozenset({"dev"}))
BOB = Pusher("bob")
RELEASER = Pusher("rita", frozenset({"release"}))
DEPLOY = Pusher(deploy_key_id=5)

MAIN_SIGNED: list[dict[str, Any]] = [{"pattern": "refs/heads/main", "require_signed": True,
                                      "push": {"groups": ["release", "dev"]}}]
RELEASE_TAGS: list[dict[str, Any]] = [{"pattern": "refs/tags/v*", "create": {"groups": ["release"]}},
                                      {"pattern": "refs/heads/*", "linear": True}]
CONTENT: list[dict[str, Any]] = [{"pattern": "refs/heads/*", "max_file_bytes": 100 * MIB,
                                  "forbidden_paths": ["*.pem", "secrets/"]}]
DEPLOYS: list[dict[str, Any]] = [{"pattern": "refs/heads/deploy/*", "push": {"deploy_keys": [5], "users": ["alice"]}}]


def commit(oid: str = C1, parents: int = 1, signature: str = UNSIGNED,
           files: tuple[FileChange, ...] = ()) -> CommitFacts:
    return CommitFacts(oid, parents, signature, files)


TABLE = [
    # (rule list, ref, creating, pusher, commits, refusal)
    (MAIN_SIGNED, "refs/heads/main", False, ALICE, [commit(signature=SIGNED)], None),
    (MAIN_SIGNED, "refs/heads/main", False, ALICE, [commit(signature=SIGNED), commit(C2)],
     "commit 9f8e7d6 is not signed by a registered key; rule 'refs/heads/main' requires signed commits"),
    (MAIN_SIGNED, "refs/heads/main", False, ALICE, [commit(signature=BAD)],
     "commit 1a2b3c4 is not signed by a registered key; rule 'refs/heads/main' requires signed commits"),
    (MAIN_SIGNED, "refs/heads/main", False, BOB, [commit(signature=SIGNED)],
     "bob may not push to refs/heads/main: rule 'refs/heads/main' allows group dev, group release"),
    (MAIN_SIGNED, "refs/heads/feature", False, BOB, [commit()], None),  # no rule matches: grants alone
    (MAIN_SIGNED, "refs/heads/main", False, DEPLOY, [],
     "deploy key 5 may not push to refs/heads/main: rule 'refs/heads/main' allows group dev, group release"),
    (RELEASE_TAGS, "refs/tags/v1.0", True, ALICE, [commit()],
     "alice may not create refs/tags/v1.0: rule 'refs/tags/v*' allows group release"),
    (RELEASE_TAGS, "refs/tags/v1.0", True, RELEASER, [commit()], None),
    (RELEASE_TAGS, "refs/tags/nightly", True, ALICE, [commit()], None),
    (RELEASE_TAGS, "refs/heads/main", False, ALICE, [commit(parents=2)],
     "commit 1a2b3c4 is a merge commit; rule 'refs/heads/*' requires linear history"),
    (RELEASE_TAGS, "refs/heads/a/b", True, ALICE, [commit(parents=1)], None),  # * also matches /
    (CONTENT, "refs/heads/main", False, BOB, [commit(files=(FileChange("secrets/prod.pem", 10),))],
     "file secrets/prod.pem matches forbidden path '*.pem' of rule 'refs/heads/*'"),
    (CONTENT, "refs/heads/main", False, BOB, [commit(files=(FileChange("secrets/token", 10),))],
     "file secrets/token matches forbidden path 'secrets/' of rule 'refs/heads/*'"),
    (CONTENT, "refs/heads/main", False, BOB, [commit(files=(FileChange("notes/secrets.md", 10),))], None),
    (CONTENT, "refs/heads/main", False, BOB, [commit(files=(FileChange("assets/huge.bin", 105 * MIB),))],
     "file assets/huge.bin is 105.0 MiB, over the 100 MiB limit of rule 'refs/heads/*'"),
    (CONTENT, "refs/heads/main", False, BOB, [commit(files=(FileChange("assets/ok.bin", 100 * MIB),))], None),
    (CONTENT, "refs/tags/v1", True, BOB, [commit(files=(FileChange("a.pem", 1),))], None),
    (DEPLOYS, "refs/heads/deploy/prod", False, DEPLOY, [], None),
    (DEPLOYS, "refs/heads/deploy/prod", False, Pusher(deploy_key_id=6), [],
     "deploy key 6 may not push to refs/heads/deploy/prod: rule 'refs/heads/deploy/*' allows user alice, deploy key 5"),
    (DEPLOYS, "refs/heads/deploy/prod", False, ALICE, [], None),
    ([], "refs/heads/main", False, BOB, [commit()], None),
]


@pytest.mark.parametrize(("listing", "ref", "creating", "pusher", "commits", "refusal"), TABLE)
def test_rules_refuse_what_they_must_and_let_through_the_rest(
        listing: list[dict[str, Any]], ref: str, creating: bool, pusher: Pusher,
        commits: list[CommitFacts], refusal: str | None) -> None:
    ruleset = RuleSet.of("rs-1", listing)
    assert rules.judge(ruleset.governing(ref), ref, creating, pusher, commits) == refusal


def test_the_first_matching_rule_applies_alone() -> None:
    ruleset = RuleSet.of("rs-2", [{"pattern": "refs/heads/main"}, {"pattern": "refs/heads/*", "linear": True}])
    rule = ruleset.governing("refs/heads/main")
    assert rule is not None and rule.pattern == "refs/heads/main"
    assert rules.judge(rule, "refs/heads/main", False, BOB, [commit(parents=2)]) is None
    assert not rule.needs_commits


def test_create_falls_back_to_push_when_absent() -> None:
    rule = rules.Rule.of({"pattern": "refs/heads/*", "push": {"users": ["alice"]}})
    assert rules.access_refusal(rule, "refs/heads/x", True, BOB) == \
        "bob may not push to refs/heads/x: rule 'refs/heads/*' allows user alice"
    assert rules.access_refusal(rule, "refs/heads/x", True, ALICE) is None


@pytest.mark.parametrize(("pattern", "ok"), [
    ("refs/heads/main", True), ("refs/heads/*", True), ("refs/tags/v*", True), ("refs/*", True),
    ("*", True), ("refs/heads/release-[0-9]*", True),
    ("main", False), ("heads/main", False), ("refs/notes/*", False), ("refs/heads/", False),
    ("refs/heads/a..b", False), ("refs/heads/with space", False), ("refs/heads/x.lock", False),
    ("refs/heads/a:b", False),
])
def test_a_pattern_that_can_never_match_is_named(pattern: str, ok: bool) -> None:
    assert (pattern_problem(pattern) is None) is ok


def test_allowed_signers_lists_each_key_with_its_users_emails() -> None:
    text = allowed_signers([SshSigner("ssh-ed25519 AAAA", ("a@x.org", "alice@y.org")), SshSigner("ssh-rsa BBBB", ())])
    assert text == 'a@x.org,alice@y.org namespaces="git" ssh-ed25519 AAAA\n'


def test_a_signed_tag_splits_where_git_puts_its_signature() -> None:
    head = b"object " + C1.encode() + b"\ntype commit\ntag v1\ntagger Al <al@x.org> 1 +0000\n\nrelease\n"
    signature = b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
    assert split_tag(head + signature) == (signature, head)
    assert split_tag(head) == (None, head)
    assert tag_tagger_email(head) == "al@x.org"


# --- signatures, with the real ssh-keygen --------------------------------------------------

def _key(tmp_path: Path, kind: str) -> tuple[Path, str]:
    path = tmp_path / f"id_{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path, " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _sign(key: Path, payload: bytes, namespace: str = "git") -> bytes:
    return subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", namespace], input=payload,
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])  # ecdsa: the library does not read it, ssh-keygen does
def test_a_signature_counts_only_by_a_key_of_the_committers_user(tmp_path: Path, kind: str) -> None:
    alice, alice_public = _key(tmp_path, kind)
    (tmp_path / "other").mkdir()
    other, _ = _key(tmp_path / "other", kind)
    payload = b"tree 0000\nauthor A <a@x.org> 0 +0000\n\nchange\n"
    with Verifier([SshSigner(alice_public, ("a@x.org",))]) as verifier:
        assert verifier.verify(_sign(alice, payload), payload, "a@x.org") == SIGNED
        assert verifier.verify(_sign(alice, payload), payload, "b@x.org") == BAD  # not her email
        assert verifier.verify(_sign(alice, payload), payload + b"x", "a@x.org") == BAD  # not what was signed
        assert verifier.verify(_sign(alice, payload, "file"), payload, "a@x.org") == BAD  # not git's namespace
        assert verifier.verify(_sign(other, payload), payload, "a@x.org") == BAD  # not a registered key
        assert verifier.verify(None, payload, "a@x.org") == UNSIGNED
        assert verifier.verify(b"-----BEGIN SIGNED MESSAGE-----\n", payload, "a@x.org") == BAD
