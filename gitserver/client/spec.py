"""A command of the table: its arguments, the API request it makes, and how its answer shows.

:func:`run` executes one against any :class:`~gitserver.client.transport.Transport`; the
argparse side is in :mod:`.register`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from gitserver.client import render
from gitserver.client.errors import EXIT_OK, ClientError, error_message
from gitserver.client.transport import Reply, Transport

API = "/api/v1"
BODY_METHODS = ("POST", "PUT", "PATCH")
NO_CONTENT = 204
PAGE = 100  # the API's largest page (api/paging.MAX_LIMIT): the fewest round trips


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument: positional unless ``flag`` is given; it fills the path placeholder of
    its ``name``, the body field ``field`` or the query parameter ``query``."""

    name: str
    help: str = ""
    flag: str | None = None
    field: str | None = None
    query: str | None = None
    kind: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    nargs: str | None = None
    action: str | None = None  # "store_true", "store_false", "append"
    default: Any = None
    required: bool = False
    metavar: str | None = None
    group: str | None = None  # arguments of one group exclude each other


@dataclasses.dataclass(frozen=True)
class Context:
    """What a command's run is given besides its arguments."""

    connect: Callable[[], Transport]
    remote: bool
    # Commands of the server host that no API answers (a site-admin token), by name.
    local: Mapping[str, Callable[[argparse.Namespace], int]] = dataclasses.field(default_factory=dict)


Handler = Callable[["Command", argparse.Namespace, Context], int]
Path = str | Callable[[argparse.Namespace], str]


@dataclasses.dataclass(frozen=True)
class Command:
    """``gitserver RESOURCE VERB …``: ``method path`` with the body built from the args (or by
    ``body``); a listing when ``columns`` is set. Its answer shows as ``say``'s line, else the
    object's fields, else (no content) ``done``; ``--json`` prints the API's own JSON."""

    resource: str
    verb: str
    help: str
    method: str
    path: Path
    args: Sequence[Arg] = ()
    columns: Sequence[str] = ()
    say: Callable[[Any, argparse.Namespace], str] | None = None
    body: Callable[[argparse.Namespace], Any] | None = None
    done: str = ""
    aliases: Sequence[str] = ()
    handler: Handler | None = None  # the whole run, for commands the above cannot say

    @property
    def listing(self) -> bool:
        return bool(self.columns)


def quoted(value: Any) -> str:
    """A path segment: every character that is not unreserved is escaped, so a name with ``/``
    or ``?`` reaches the API as a name (and is refused there) rather than as another path."""
    return quote(str(value), safe="")


def resolve_path(cmd: Command, args: argparse.Namespace) -> str:
    template = cmd.path(args) if callable(cmd.path) else cmd.path
    values = {a.name: quoted(getattr(args, a.name)) for a in cmd.args if getattr(args, a.name, None) is not None}
    return API + template.format_map(values)


def request_body(cmd: Command, args: argparse.Namespace) -> Any:
    """The JSON body: ``cmd.body``'s, or the fields of the arguments that were given. An
    update that changes nothing is refused here, naming what it could change."""
    if cmd.body is not None:
        return cmd.body(args)
    if cmd.method not in BODY_METHODS:
        return None
    body = {a.field: getattr(args, a.name) for a in cmd.args
            if a.field and getattr(args, a.name, None) is not None}
    if cmd.method == "PATCH" and not body:
        options = ", ".join(a.flag for a in cmd.args if a.field and a.flag)
        raise ClientError(f"{cmd.resource} {cmd.verb}: nothing to change; give {options}")
    return body


def query(cmd: Command, args: argparse.Namespace) -> dict[str, str]:
    return {a.query: str(getattr(args, a.name)) for a in cmd.args
            if a.query and getattr(args, a.name, None) is not None}


def checked(reply: Reply, accept: Sequence[int] = ()) -> Reply:
    """``reply``, or a :class:`ClientError` with the API's message for an error status."""
    if reply.status >= 400 and reply.status not in accept:
        raise ClientError(error_message(reply.status, reply.json(), reply.text), reply.status)
    return reply


def fetch_all(transport: Transport, path: str, params: dict[str, str], limit: int | None) -> dict[str, Any]:
    """Every item of a listing, following ``next`` (docs/contract.md), or the first ``limit``."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        page_params["limit"] = str(PAGE if limit is None else min(limit - len(items), PAGE))
        page = checked(transport.request("GET", path, params=page_params)).json() or {}
        items.extend(page.get("items", []))
        cursor = page.get("next")
        if not cursor or (limit is not None and len(items) >= limit):
            return {"items": items, "next": cursor}


def run(cmd: Command, args: argparse.Namespace, ctx: Context) -> int:
    """Run ``cmd`` and print its answer; errors raise :class:`ClientError`."""
    if cmd.handler is not None:
        return cmd.handler(cmd, args, ctx)
    transport = ctx.connect()
    try:
        path = resolve_path(cmd, args)
        if cmd.listing:
            show_listing(cmd, args, fetch_all(transport, path, query(cmd, args), getattr(args, "limit", None)))
            return EXIT_OK
        reply = checked(transport.request(cmd.method, path, body=request_body(cmd, args), params=query(cmd, args)))
        show_answer(cmd, args, reply.json() if reply.status != NO_CONTENT else None)
        return EXIT_OK
    finally:
        transport.close()


def show_listing(cmd: Command, args: argparse.Namespace, page: dict[str, Any]) -> None:
    if args.json:
        print(render.as_json(page))
    elif page["items"]:
        print(render.table(page["items"], cmd.columns))
    else:
        print(f"no {cmd.resource}s")


def show_answer(cmd: Command, args: argparse.Namespace, data: Any) -> None:
    if args.json:
        if data is not None:
            print(render.as_json(data))
    elif cmd.say is not None:
        print(cmd.say(data, args))
    elif data is None:
        print(cmd.done or f"{cmd.resource} {cmd.verb}: done")
    else:
        print(render.fields(data))
