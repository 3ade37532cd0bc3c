"""Parsing of a self-service command (``ssh git@host repo info acme/widgets --json``).

Pure: text in, a validated :class:`SelfServiceCommand` or an :class:`InvalidInput` with one
safe line out. The text is split with :mod:`shlex` (quotes work as in a shell) and nothing
ever reaches a shell. An allow-list: the commands of :data:`COMMANDS`, each with its own
options; anything else is refused, naming what was wrong. The same table writes ``help``.
"""

from __future__ import annotations

import dataclasses
import re
import shlex

from gitserver.policy.errors import InvalidInput
from gitserver.ssh.commands import split_repo_path

# Far more than any valid command needs (a description is at most 2,000 characters), far
# less than what would make a split or an error message costly.
MAX_COMMAND_LENGTH = 4096
# A person typing never sends these, and a newline in an argument could forge a second
# line of output or of a log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JSON_FLAG = "--json"
END_OF_OPTIONS = "--"
# Ids are bounded like the API's, so an absurd number is "not found", never an SQL overflow.
MAX_ID = 2147483647
MAX_TOKEN_DAYS = 3650
MAX_PIPELINES = 100
DEFAULT_PIPELINES = 20
SCOPES = ("read", "write", "admin")
VISIBILITIES = ("private", "internal", "public")
_SHOWN = 40  # characters of a bad word echoed in an error


@dataclasses.dataclass(frozen=True)
class SelfServiceCommand:
    """One validated command. ``verb`` is the command's words (``"repo info"``); the other
    fields are what its arguments said, the defaults where they said nothing."""

    verb: str
    json: bool = False
    tenant: str = ""
    repo: str = ""
    text: str = ""  # repo describe's description, keys add's title, token create's name
    visibility: str = "private"
    number: int = 0  # the key id of keys remove, the pipeline id of log
    follow: bool = False
    expires_days: int | None = None
    scopes: tuple[str, ...] = SCOPES
    limit: int = DEFAULT_PIPELINES

    @property
    def full_name(self) -> str:
        return f"{self.tenant}/{self.repo}"


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one command takes: positional arguments (a last one ending in ``…`` takes the
    rest), options with a value, flags, and whether ``--json`` applies."""

    summary: str
    positional: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    json: bool = True
    optional: int = 0  # how many of the last positional arguments may be left out

    def usage(self, verb: str) -> str:
        parts = [verb]
        required = len(self.positional) - self.optional
        parts += [p if i < required else f"[{p}]" for i, p in enumerate(self.positional)]
        parts += [f"[{o} {_METAVAR[o]}]" for o in self.options]
        parts += [f"[{f}]" for f in self.flags]
        if self.json:
            parts.append(f"[{JSON_FLAG}]")
        return " ".join(parts)


_METAVAR = {"--description": "TEXT", "--visibility": "|".join(VISIBILITIES), "--title": "TEXT",
            "--expires": "DAYS", "--scope": "|".join(SCOPES), "--name": "TEXT", "--limit": "N"}

# Every command, in the order help lists them.
COMMANDS: dict[str, Spec] = {
    "help": Spec("this list", json=False),
    "info": Spec("who you are, and each repository you can reach with your permission on it"),
    "repo list": Spec("the repositories of your tenant (or TENANT) you can read",
                      positional=("TENANT",), optional=1),
    "repo info": Spec("one repository", positional=("TENANT/REPO",)),
    "repo create": Spec("create a repository (the tenant's admins)", positional=("TENANT/REPO",),
                        options=("--description", "--visibility")),
    "repo describe": Spec("set a repository's description (its admins)",
                          positional=("TENANT/REPO", "TEXT…")),
    "keys list": Spec("your SSH keys"),
    "keys add": Spec("add the public key given on stdin to your keys", options=("--title",)),
    "keys remove": Spec("remove one of your keys (its id, from keys list)", positional=("ID",)),
    "token create": Spec("create an API token, printed alone on the last line",
                         options=("--expires", "--scope", "--name")),
    "pipelines": Spec("the newest pipelines of a repository", positional=("TENANT/REPO",),
                      options=("--limit",)),
    "log": Spec("a pipeline's log; -f follows it until the pipeline ends", positional=("PIPELINE_ID",),
                flags=("-f",), json=False),
    "login": Spec("a one-time link that signs a browser in to the web console (valid 5 minutes)"),
}
# Words that take a second word (``repo list``), for a message naming the choices.
_GROUPS = sorted({verb.split()[0] for verb in COMMANDS if " " in verb})


def parse(text: str) -> SelfServiceCommand:
    """The command ``text`` asks for; :class:`InvalidInput` naming the problem otherwise."""
    words = split(text)
    verb, rest = _verb(words)
    spec = COMMANDS[verb]
    positional, options, flags, as_json = _arguments(verb, spec, rest)
    return _build(verb, positional, options, flags, as_json)


def split(text: str) -> list[str]:
    """The words of ``text`` as a POSIX shell would split them, without running anything."""
    if len(text) > MAX_COMMAND_LENGTH:
        raise InvalidInput(f"command too long ({len(text)} characters; at most {MAX_COMMAND_LENGTH})")
    if _CONTROL.search(text):
        raise InvalidInput("the command contains a control character (a newline, tab or NUL); "
                           "quote arguments instead")
    try:
        words = shlex.split(text)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise InvalidInput(f"cannot split the command: {str(exc).lower()}") from None
    if not words:
        raise InvalidInput("no command given; try 'help'")
    return words


def _verb(words: list[str]) -> tuple[str, list[str]]:
    first = words[0]
    if first in COMMANDS:
        return first, words[1:]
    if first in _GROUPS:
        choices = [verb.split()[1] for verb in COMMANDS if verb.startswith(first + " ")]
        if len(words) < 2 or f"{first} {words[1]}" not in COMMANDS:
            given = f" {shown(words[1])}" if len(words) > 1 else ""
            raise InvalidInput(f"'{first}' needs one of {', '.join(choices)}"
                               f"{', not' + given if given else ''}")
        return f"{first} {words[1]}", words[2:]
    raise InvalidInput(f"unknown command {shown(first)}; 'help' lists the commands")


def _arguments(verb: str, spec: Spec, words: list[str]) -> tuple[list[str], dict[str, str], set[str], bool]:
    """Split ``words`` into positional arguments, options with values, flags and --json."""
    positional: list[str] = []
    options: dict[str, str] = {}
    flags: set[str] = set()
    as_json = False
    rest_taker = bool(spec.positional) and spec.positional[-1].endswith("…")
    index, ended = 0, False
    while index < len(words):
        word = words[index]
        index += 1
        if ended or not word.startswith("-") or word == "-":
            positional.append(word)
        elif word == END_OF_OPTIONS:
            ended = True
        elif word == JSON_FLAG and spec.json:
            as_json = True
        elif word in spec.flags:
            flags.add(word)
        elif word in spec.options:
            if index >= len(words):
                raise InvalidInput(f"{verb}: {word} needs a value ({_METAVAR[word]})")
            if word in options:
                raise InvalidInput(f"{verb}: {word} given twice")
            options[word] = words[index]
            index += 1
        else:
            raise InvalidInput(f"{verb}: unknown option {shown(word)}; usage: {spec.usage(verb)}")
    least = len(spec.positional) - spec.optional
    if len(positional) < least or (len(positional) > len(spec.positional) and not rest_taker):
        raise InvalidInput(f"usage: {spec.usage(verb)}")
    return positional, options, flags, as_json


def _build(verb: str, positional: list[str], options: dict[str, str], flags: set[str],
           as_json: bool) -> SelfServiceCommand:
    fields: dict[str, object] = {"verb": verb, "json": as_json, "follow": "-f" in flags}
    spec = COMMANDS[verb]
    for name, value in zip(spec.positional, positional, strict=False):
        if name == "TENANT/REPO":
            fields["tenant"], fields["repo"] = repository(value)
        elif name == "TENANT":
            fields["tenant"] = value
        elif name in ("ID", "PIPELINE_ID"):
            fields["number"] = number(value, "a key id" if name == "ID" else "a pipeline id", MAX_ID)
    if verb == "repo describe":
        fields["text"] = " ".join(positional[1:])
    for option, value in options.items():
        fields.update(_option(option, value))
    return SelfServiceCommand(**fields)  # type: ignore[arg-type]


def _option(option: str, value: str) -> dict[str, object]:
    if option in ("--description", "--title", "--name"):
        return {"text": value}
    if option == "--visibility":
        return {"visibility": choice(value, VISIBILITIES, "--visibility")}
    if option == "--expires":
        return {"expires_days": number(value, "--expires: a number of days", MAX_TOKEN_DAYS)}
    if option == "--scope":
        return {"scopes": scope_list(value)}
    return {"limit": number(value, "--limit: a number of pipelines", MAX_PIPELINES)}


def repository(text: str) -> tuple[str, str]:
    """``tenant/repo`` in any spelling git's commands accept (gitserver.ssh.commands)."""
    try:
        return split_repo_path(text)
    except InvalidInput as exc:
        raise InvalidInput(f"{shown(text)} is not TENANT/REPO: {exc.message}") from None


def number(text: str, what: str, highest: int) -> int:
    """A whole number from 1 to ``highest``, in ASCII digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(highest))) \
            or not 1 <= int(text) <= highest:
        raise InvalidInput(f"{what} must be a whole number from 1 to {highest}, not {shown(text)}")
    return int(text)


def choice(text: str, choices: tuple[str, ...], what: str) -> str:
    if text not in choices:
        raise InvalidInput(f"{what} must be one of {', '.join(choices)}, not {shown(text)}")
    return text


def scope_list(text: str) -> tuple[str, ...]:
    """``read``, ``write``, ``admin`` or a comma-separated list of them, in their order."""
    given = {choice(part, SCOPES, "--scope") for part in text.split(",")}
    return tuple(s for s in SCOPES if s in given)


def shown(word: str) -> str:
    """``word`` quoted for an error message: at most a few dozen characters (a 10 kB argument
    is named by its start), on one line (control characters never get this far)."""
    cut = word if len(word) <= _SHOWN else word[:_SHOWN] + "…"
    return repr(cut) if cut.isprintable() else ascii(cut)


def help_text() -> str:
    """What ``help`` prints: every command with its usage and what it does."""
    lines = ["Commands (ssh git@host COMMAND …); git clone, fetch and push work as usual:"]
    for verb, spec in COMMANDS.items():
        lines += [f"  {spec.usage(verb)}", f"      {spec.summary}"]
    lines.append("A repository is named TENANT/REPO (a trailing .git or slashes are fine); "
                 "--json prints the REST API's objects.")
    return "\n".join(lines) + "\n"
