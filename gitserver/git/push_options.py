"""Push options (``git push -o …``): which ones gitserver understands, as a pure parser.

The hooks import this module, so it uses only the standard library. Every option is stored
on the push as given (``push_options`` in the API and webhooks); these act on the pipeline:

``ci.skip``             archive the push as always, but run no build for it
``ci.variable=KEY=VAL`` ``KEY=VAL`` in the environment of every build step of the push
                        (over the pipeline file's ``env``; ``GITSERVER_*`` stay reserved)

Options are network input: their number and size are bounded, and a ``ci.*`` option that
cannot be honoured refuses the push with a message naming it, rather than building without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

CI_SKIP = "ci.skip"
CI_VARIABLE = "ci.variable"
CI_PREFIX = "ci."
MAX_OPTIONS = 32
MAX_OPTION_LENGTH = 4096
RESERVED_VARIABLE_PREFIX = "GITSERVER_"
_VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class PushOptionError(ValueError):
    """A push option that cannot be accepted; the message names it."""


# A NamedTuple, not a dataclass: the hooks import this on every push, and dataclasses imports
# inspect (ast, dis, tokenize), ~10 ms of CPU (docs/performance.md).
class PushOptions(NamedTuple):
    raw: tuple[str, ...] = ()
    skip_ci: bool = False
    variables: tuple[tuple[str, str], ...] = ()


def parse(options: Sequence[str]) -> PushOptions:
    """Validate the options of one push; raises PushOptionError naming the first bad one."""
    if len(options) > MAX_OPTIONS:
        raise PushOptionError(f"{len(options)} options given, at most {MAX_OPTIONS} are accepted")
    skip = False
    variables: dict[str, str] = {}
    for option in options:
        shown = option[:60]
        if len(option) > MAX_OPTION_LENGTH:
            raise PushOptionError(f"'{shown}…' is longer than {MAX_OPTION_LENGTH} characters")
        if "\0" in option or "\n" in option:
            raise PushOptionError("an option contains a NUL or newline character")
        if option == CI_SKIP:
            skip = True
        elif option.startswith(CI_VARIABLE + "="):
            key, value = _variable(option.removeprefix(CI_VARIABLE + "="))
            variables[key] = value
        elif option.startswith(CI_PREFIX):
            raise PushOptionError(f"'{shown}' is unknown (gitserver knows {CI_SKIP} and "
                                  f"{CI_VARIABLE}=KEY=VALUE)")
    return PushOptions(raw=tuple(options), skip_ci=skip, variables=tuple(variables.items()))


def _variable(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not _VARIABLE_NAME_RE.fullmatch(key):
        raise PushOptionError(f"{CI_VARIABLE}={text[:40]!r} must be KEY=VALUE, KEY made of "
                              "letters, digits and '_'")
    if key.upper().startswith(RESERVED_VARIABLE_PREFIX):
        raise PushOptionError(f"{CI_VARIABLE}: {key} is reserved (GITSERVER_*)")
    return key, value



REDACTED = "***"


def shown(options: Sequence[str]) -> list[str]:
    """The options as the push audit and webhooks show them: ``ci.variable`` values hidden.

    Pushers put secrets there, and the audit and payloads reach every reader of a public
    repository; the key stays so a reader can still tell which variable a push set."""
    return [_redacted(option) for option in options]


def _redacted(option: str) -> str:
    prefix = CI_VARIABLE + "="
    if not option.startswith(prefix) or "=" not in option.removeprefix(prefix):
        return option
    key = option.removeprefix(prefix).split("=", 1)[0]
    return f"{prefix}{key}={REDACTED}"
