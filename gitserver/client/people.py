"""The commands of tenants and the people in them: tenant, user, key, group, token."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from typing import Any

from gitserver.client import render
from gitserver.client.errors import EXIT_ERROR, EXIT_OK, ClientError
from gitserver.client.register import positive
from gitserver.client.spec import Arg, Command, Context, checked, resolve_path, run

TENANT = "/tenants/{tenant}"
USER = TENANT + "/users/{user}"
GROUP = TENANT + "/groups/{group}"
KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")  # an OpenSSH key line, not a file name
MAX_KEY_FILE = 64 * 1024
ROLES = ("member", "admin", "site-admin")
SCOPES = ("read", "write", "admin")

T = Arg("tenant", "the tenant's name")
U = Arg("user", "the user's name")
G = Arg("group", "the group's name")
DESCRIPTION = Arg("description", "a description", flag="--description", field="description")


def read_text(name: str, limit: int | None = None) -> str:
    """A file's text, or stdin's for ``-``; an unreadable file is bad input naming it."""
    try:
        if name == "-":
            return sys.stdin.read()
        with open(name, encoding="utf-8") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except (OSError, UnicodeDecodeError) as exc:
        shown = "stdin" if name == "-" else name
        raise ClientError(f"cannot read {shown}: {getattr(exc, 'strerror', None) or exc}") from exc


def key_text(value: str) -> str:
    """A public key given as its line, a ``.pub`` file or ``-`` (stdin)."""
    return value if value.startswith(KEY_PREFIXES) else read_text(value, MAX_KEY_FILE)


def key_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key_text(args.key).strip(), "title": args.title or ""}
    if getattr(args, "write", None):
        body["write"] = True
    return body


def key_line(key: dict[str, Any], _args: argparse.Namespace) -> str:
    return f"{key['bits']} {key['fingerprint']} {key['title'] or 'no comment'} ({key['key_type']})"


def import_keys(cmd: Command, args: argparse.Namespace, ctx: Context) -> int:
    """``key import``: one line per refused key on stderr, then a summary; exit 1 when any
    line was refused (nothing is added then, unless ``--skip-refused``)."""
    name = "stdin" if args.file == "-" else args.file
    lines = read_text(args.file).splitlines()
    transport = ctx.connect()
    try:
        reply = checked(transport.request("POST", resolve_path(cmd, args),
                                          body={"keys": lines, "skip_refused": bool(args.skip_refused)}),
                        accept=(422,))
    finally:
        transport.close()
    report = reply.json()
    if args.json:
        print(render.as_json(report))
        return EXIT_ERROR if report["refused"] else EXIT_OK
    for item in report["refused"]:
        print(f"{name}:{item['line']}: refused: {item['reason']}", file=sys.stderr)
    who = f"{args.tenant}/{args.user}"
    if not report["imported"]:
        print(f"gitserver: nothing imported for {who}: {len(report['refused'])} of {report['total']} key lines "
              "refused (fix them, or give --skip-refused to import the others)", file=sys.stderr)
    else:
        print(f"imported {report['added']} of {report['total']} keys for {who}")
    return EXIT_ERROR if report["refused"] else EXIT_OK


def token_path(args: argparse.Namespace) -> str:
    if not (args.tenant and args.user):
        raise ClientError("gitserver token create: give --site-admin, or --tenant and --user")
    return USER + "/tokens"


def token_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name or ""}
    if args.scopes:
        body["scopes"] = args.scopes
    if args.expires:
        body["expires_at"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires)).isoformat()
    return body


def create_token(cmd: Command, args: argparse.Namespace, ctx: Context) -> int:
    """A user's token through the API; a site-admin token only on the server host, where it
    is how the first token is made (no API call can mint one)."""
    if args.site_admin:
        if ctx.remote or "site-admin-token" not in ctx.local:
            raise ClientError("a --site-admin token is made on the server host: run `gitserver token create "
                              "--site-admin` there, without --url")
        return ctx.local["site-admin-token"](args)
    return run(dataclasses.replace(cmd, handler=None), args, ctx)


def _created(kind: str) -> Any:
    return lambda obj, _args: f"{kind} {obj['name']} created"


COMMANDS = (
    # tenant
    Command("tenant", "list", "tenants you can see", "GET", "/tenants",
            columns=("name", "description", "quota_bytes", "created_at")),
    Command("tenant", "show", "one tenant, with its size on disk", "GET", TENANT, (T,)),
    Command("tenant", "create", "create a tenant (site admins)", "POST", "/tenants",
            (Arg("name", "the new tenant's name", field="name"), DESCRIPTION), say=_created("tenant")),
    Command("tenant", "update", "change a tenant's description or repository template", "PATCH", TENANT,
            (T, DESCRIPTION, Arg("create_template", "template for new repositories", flag="--create-template",
                                 field="create_template"))),
    # user
    Command("user", "list", "users of a tenant", "GET", TENANT + "/users",
            (T,), columns=("name", "role", "disabled", "created_at")),
    Command("user", "show", "one user", "GET", USER, (T, U)),
    Command("user", "create", "create a user", "POST", TENANT + "/users",
            (T, Arg("name", "the new user's name", field="name"),
             Arg("role", "default: member", flag="--role", field="role", choices=ROLES, default="member")),
            say=lambda u, _a: f"user {u['tenant']}/{u['name']} created ({u['role']})"),
    Command("user", "update", "change a user's role, or disable or enable them", "PATCH", USER,
            (T, U, Arg("role", "the new role", flag="--role", field="role", choices=ROLES),
             Arg("disabled", "refuse their keys and tokens", flag="--disable", field="disabled",
                 action="store_true", group="state"),
             Arg("disabled", "accept their keys and tokens again", flag="--enable", field="disabled",
                 action="store_false", group="state"))),
    Command("user", "remove", "disable a user (users are never deleted: pushes keep their author)",
            "DELETE", USER, (T, U), say=lambda _d, a: f"user {a.tenant}/{a.user} disabled"),
    # key
    Command("key", "list", "a user's SSH keys", "GET", USER + "/keys", (T, U),
            columns=("id", "fingerprint", "key_type", "title", "last_used_at", "expires_at")),
    Command("key", "show", "one SSH key", "GET", USER + "/keys/{id}",
            (T, U, Arg("id", "the key's id (key list)", kind=positive))),
    Command("key", "create", "add an SSH public key to a user", "POST", USER + "/keys",
            (T, U, Arg("key", "an OpenSSH public key line, a .pub file, or - for stdin"),
             Arg("title", "default: the key's comment", flag="--title")),
            body=key_body, say=key_line, aliases=("add",)),
    Command("key", "remove", "remove an SSH key", "DELETE", USER + "/keys/{id}",
            (T, U, Arg("id", "the key's id (key list)", kind=positive)),
            say=lambda _d, a: f"key {a.id} of {a.tenant}/{a.user} removed"),
    Command("key", "import", "add every key of an authorized_keys file, all or nothing", "POST",
            USER + "/keys/batch",
            (T, U, Arg("file", "an authorized_keys file (one key per line), or - for stdin"),
             Arg("skip_refused", "import the acceptable keys even when some lines are refused",
                 flag="--skip-refused", action="store_true")),
            handler=import_keys),
    # group
    Command("group", "list", "groups of a tenant", "GET", TENANT + "/groups", (T,),
            columns=("name", "description", "created_at")),
    Command("group", "show", "one group", "GET", GROUP, (T, G)),
    Command("group", "create", "create a group", "POST", TENANT + "/groups",
            (T, Arg("name", "the new group's name", field="name"), DESCRIPTION), say=_created("group")),
    Command("group", "update", "change a group's description", "PATCH", GROUP, (T, G, DESCRIPTION)),
    Command("group", "remove", "delete a group, its memberships and its grants", "DELETE", GROUP, (T, G),
            say=lambda _d, a: f"group {a.tenant}/{a.group} removed"),
    Command("group", "members", "the members of a group", "GET", GROUP + "/members", (T, G),
            columns=("name", "role", "disabled")),
    Command("group", "add-member", "add a user to a group", "PUT", GROUP + "/members/{user}", (T, G, U),
            body=lambda _a: None, say=lambda _d, a: f"{a.user} is a member of {a.tenant}/{a.group}"),
    Command("group", "remove-member", "take a user out of a group", "DELETE", GROUP + "/members/{user}",
            (T, G, U), say=lambda _d, a: f"{a.user} is no longer a member of {a.tenant}/{a.group}"),
    # token
    Command("token", "list", "a user's API tokens (never their secrets)", "GET", USER + "/tokens", (T, U),
            columns=("id", "name", "scopes", "expires_at", "revoked_at", "last_used_at")),
    Command("token", "show", "one API token", "GET", USER + "/tokens/{id}",
            (T, U, Arg("id", "the token's id (token list)", kind=positive))),
    Command("token", "create", "print a new API token (its secret is shown once)", "POST", token_path,
            (Arg("site_admin", "a token with every right (on the server host only)", flag="--site-admin",
                 action="store_true"),
             Arg("tenant", "the user's tenant", flag="--tenant"), Arg("user", "the user", flag="--user"),
             Arg("name", "a name to recognise it by", flag="--name", default=""),
             Arg("scopes", "read, write or admin (repeat; default: the caller's)", flag="--scope",
                 action="append", choices=SCOPES),
             Arg("expires", "expire after this many days", flag="--expires", kind=positive, metavar="DAYS")),
            body=token_body, say=lambda t, _a: t["token"], handler=create_token),
    Command("token", "remove", "revoke an API token", "DELETE", USER + "/tokens/{id}",
            (T, U, Arg("id", "the token's id (token list)", kind=positive)),
            say=lambda _d, a: f"token {a.id} of {a.tenant}/{a.user} revoked"),
)
