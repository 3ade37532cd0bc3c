"""parse_key_lines: an authorized_keys file, line by line (pure; no database)."""

from __future__ import annotations

import base64
import struct

import pytest

from gitserver.identity.keys import MAX_BATCH_KEYS, parse_key_lines
from gitserver.policy.errors import InvalidInput


def ed25519(seed: int, comment: str = "") -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


@pytest.mark.parametrize(("lines", "expected"), [
    ([], []),
    (["", "   ", "# comment", "  # indented comment"], []),
    ([ed25519(1, "a")], [(1, "")]),
    ([ed25519(1), "", ed25519(2)], [(1, ""), (3, "")]),
    ([ed25519(1), ed25519(1, "again")], [(1, ""), (2, "the same key as line 1")]),
    (["hello"], [(1, "key is not in OpenSSH format 'type base64 [comment]'")]),
    (["ssh-dss AAAA me"], [(1, "DSA keys are not accepted; use ed25519 or RSA of 2048 bits or more")]),
    (['no-pty ' + ed25519(3)], [(1, "authorized_keys options (like no-pty or command=…) are not accepted; "
                                    "paste only 'type base64 [comment]'")]),
    ([ed25519(4) + "\r"], [(1, "")]),  # a file with CRLF line ends
])
def test_each_key_line_is_parsed_or_refused_with_its_reason(lines: list[str],
                                                            expected: list[tuple[int, str]]) -> None:
    assert [(k.line, k.problem) for k in parse_key_lines(lines)] == expected


def test_the_comment_is_kept_as_the_title() -> None:
    (line,) = parse_key_lines([ed25519(5, "alice@laptop")])
    assert line.key is not None and line.key.comment == "alice@laptop" and not line.refused


def test_a_batch_has_a_bound() -> None:
    with pytest.raises(InvalidInput, match="at most 100,000 keys"):
        parse_key_lines([""] * (MAX_BATCH_KEYS + 1))
