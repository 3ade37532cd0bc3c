"""Shell completion generated from the parser itself: ``gitserver completion bash|zsh``.

The script holds, for each command path (``gitserver``, ``gitserver tenant``, …), the words
that may follow it (subcommands, options, an argument's choices), so completing costs no
Python start. zsh runs the bash function through its ``bashcompinit``. Anything else (file
names, tenant names) falls back to the shell's default completion.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator

SHELLS = ("bash", "zsh")
FUNCTION = "_gitserver_complete"
TABLE = "_gitserver_words"

_BASH = """\
# gitserver completion for {shell}; load it with: source <(gitserver completion {shell})
{prelude}declare -gA {table}
# Keys through a variable, never quoted in the subscript: zsh keeps such quotes in the key.
{function}_add() {{ local key="$1"; {table}[$key]="$2"; }}
{entries}
{function}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path=gitserver word key i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in -*) continue ;; esac
        key="$path $word"
        if [[ -n "${{{table}[$key]+set}}" ]]; then
            path="$key"
        fi
    done
    COMPREPLY=($(compgen -W "${{{table}[$path]}}" -- "$cur"))
}}
complete -o default -F {function} gitserver
"""
# bashcompinit's ``complete`` needs compinit's ``compdef``: load it when the user's setup did not.
_ZSH_PRELUDE = ("(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }\n"
                "autoload -U +X bashcompinit && bashcompinit\n")


def paths(parser: argparse.ArgumentParser, prefix: str = "gitserver") -> Iterator[tuple[str, list[str]]]:
    """Each command path (``gitserver``, ``gitserver tenant``, …; bash refuses an empty key)
    and the words that may follow it, depth first."""
    words: list[str] = []
    children: list[tuple[str, argparse.ArgumentParser]] = []
    # argparse has no public way to walk its parsers; these two names have been stable since 3.2.
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                words.append(name)
                children.append((name, sub))
        elif action.option_strings:
            words.extend(s for s in action.option_strings if s.startswith("--") or len(action.option_strings) == 1)
        elif action.choices:
            words.extend(str(c) for c in action.choices)
    yield prefix, words
    for name, sub in children:
        yield from paths(sub, f"{prefix} {name}")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell`` (one of :data:`SHELLS`)."""
    entries = "\n".join(f"{FUNCTION}_add {shlex.quote(path)} {shlex.quote(' '.join(words))}"
                        for path, words in paths(parser))
    return _BASH.format(shell=shell, prelude=_ZSH_PRELUDE if shell == "zsh" else "", table=TABLE,
                        entries=entries, function=FUNCTION)
