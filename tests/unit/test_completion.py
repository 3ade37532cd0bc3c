"""``gitserver completion bash|zsh``: the generated script loaded in the real shells, asked
what follows a command line as the shells' completion would ask it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gitserver.cli import build_parser
from gitserver.client.completion import script

# Calls the function as each shell's completion does; zsh's bashcompinit runs it in sh emulation.
CALL = {
    "bash": 'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _gitserver_complete; echo "${COMPREPLY[@]}"',
    "zsh": 'emulate -L sh; setopt kshglob noshglob braceexpand; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
           '_gitserver_complete; echo "${COMPREPLY[@]}"',
}


def complete(shell: str, *words: str) -> set[str]:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (./dev test installs it)")
    program = f"{script(build_parser(), shell)}\nask() {{ {CALL[shell]}; }}\nask \"$@\"\n"
    argv = [shell, "-c", program, shell, *words] if shell == "bash" else [shell, "-f", "-c", program, shell, *words]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"HOME": "/nonexistent",
                                                                                   "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_offers_the_words_that_may_follow(shell: str) -> None:
    assert {"tenant", "webhook", "login", "--url"} <= complete(shell, "gitserver", "")
    assert {"list", "show", "create", "update"} <= complete(shell, "gitserver", "tenant", "")
    assert "remove" not in complete(shell, "gitserver", "repo", "")  # never for repositories
    # Global options and their values are skipped; an argument's choices are offered.
    assert {"read", "write", "admin", "--user", "--group"} <= complete(
        shell, "gitserver", "--url", "http://x", "grant", "create", "t", "r", "")
    assert "--role" in complete(shell, "gitserver", "user", "create", "acme", "bob", "--r")


def test_bash_filters_by_the_typed_prefix() -> None:
    assert complete("bash", "gitserver", "--url", "http://x", "ten") == {"tenant"}
    assert complete("bash", "gitserver", "pipeline", "l") == {"list", "log"}
