"""The command table as argparse subcommands: ``gitserver RESOURCE VERB ARGS``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from gitserver.client.spec import Arg, Command


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1 (an id, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_arg(parser: Any, arg: Arg) -> None:
    options: dict[str, Any] = {"help": arg.help}
    if arg.action in ("store_true", "store_false"):
        options.update(action=arg.action, default=None)
    else:
        options.update(type=arg.kind, default=arg.default)
        for key in ("choices", "nargs", "metavar", "action"):
            if getattr(arg, key) is not None:
                options[key] = getattr(arg, key)
    if arg.flag:
        parser.add_argument(arg.flag, dest=arg.name, required=arg.required, **options)
    else:
        parser.add_argument(arg.name, **options)


def add_command(verbs: Any, cmd: Command) -> None:
    parser = verbs.add_parser(cmd.verb, help=cmd.help, description=cmd.help, aliases=list(cmd.aliases))
    groups: dict[str, Any] = {}
    for arg in cmd.args:
        target = parser
        if arg.group:
            if arg.group not in groups:
                groups[arg.group] = parser.add_mutually_exclusive_group(required=arg.required)
            target = groups[arg.group]
            arg = dataclasses.replace(arg, required=False)
        add_arg(target, arg)
    if cmd.listing:
        parser.add_argument("--limit", type=positive, default=None, help="at most this many (default: all)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.set_defaults(command_spec=cmd)


def register(sub: Any, commands: Iterable[Command], helps: dict[str, str]) -> None:
    """Add one subcommand per resource of ``commands``, with one sub-subcommand per verb."""
    by_resource: dict[str, list[Command]] = {}
    for cmd in commands:
        by_resource.setdefault(cmd.resource, []).append(cmd)
    for resource, cmds in by_resource.items():
        verbs = sub.add_parser(resource, help=helps.get(resource, resource)).add_subparsers(
            dest=f"{resource}_command", required=True, metavar="VERB")
        for cmd in cmds:
            add_command(verbs, cmd)
