"""The console's rule list in words (gitserver.console.rule_view)."""

from __future__ import annotations

from gitserver.console import rule_view


def test_sizes_read_in_binary_units_with_the_exact_bytes() -> None:
    assert rule_view.size_text(1) == "1 bytes"
    assert rule_view.size_text(1024) == "1.0 KiB (1024 bytes)"
    assert rule_view.size_text(10485760) == "10.0 MiB (10485760 bytes)"
    assert rule_view.size_text(3 * 1024**3) == "3.0 GiB (3221225472 bytes)"


def test_a_rule_in_words() -> None:
    shown = rule_view.describe({"pattern": "refs/heads/main", "require_signed": True, "linear": True,
                                "push": {"groups": ["release"], "users": ["alice"], "deploy_keys": [7]},
                                "create": {}, "max_file_bytes": 2048, "forbidden_paths": ["*.pem", "secrets/"]})
    assert shown.pattern == "refs/heads/main"
    assert dict(shown.controls) == {
        "Who may push": "groups release; users alice; deploy keys 7", "Who may create": "nobody",
        "Signatures": "every new commit and annotated tag must be signed by a registered key of its committer",
        "History": "linear: no merge commits", "Largest file": "2.0 KiB (2048 bytes)",
        "Forbidden paths": "*.pem, secrets/"}


def test_absent_controls_say_what_holds_instead() -> None:
    shown = rule_view.describe({"pattern": "refs/tags/v*"})
    assert dict(shown.controls) == {"Who may push": "whoever the grants let write", "Who may create": "as for pushing"}
