"""The commands of repositories and what hangs off them: repo, grant, deploy-key, webhook,
pipeline, push, quota, rules."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from gitserver.client.errors import EXIT_OK, ClientError
from gitserver.client.people import DESCRIPTION, TENANT, key_body, read_text
from gitserver.client.register import positive
from gitserver.client.spec import Arg, Command, Context, checked, quoted, resolve_path

REPO = TENANT + "/repos/{repo}"
PIPELINE = "/pipelines/{id}"
PERMISSIONS = ("read", "write", "admin")
VISIBILITIES = ("private", "internal", "public")
FINAL_STATES = ("succeeded", "failed", "cancelled")
HEADER_OFFSET = "X-Log-Offset"  # the pipeline log's resume point (api/resources/pipelines.py)
HEADER_STATUS = "X-Pipeline-Status"
FOLLOW_INTERVAL = 1.0  # seconds between two reads of a running pipeline's log
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
NO_QUOTA = ("none", "off", "unlimited")

T = Arg("tenant", "the tenant's name")
R = Arg("repo", "the repository's name (without .git)")
OWNER = Arg("owner", "TENANT for a tenant-wide webhook, TENANT/REPO for a repository's", metavar="TENANT[/REPO]")
ID = Arg("id", "its id", kind=positive)
WHO = (Arg("user", "a user", flag="--user", group="who", required=True),
       Arg("group", "a group", flag="--group", group="who", required=True))


def grant_path(args: argparse.Namespace) -> str:
    return REPO + ("/grants/users/{user}" if args.user else "/grants/groups/{group}")


def grant_line(grant: dict[str, Any], args: argparse.Namespace) -> str:
    who = f"user {args.user}" if args.user else f"group {args.group}"
    return f"{who} has {grant['permission']} on {args.tenant}/{args.repo}"


def webhook_base(args: argparse.Namespace) -> str:
    """``TENANT`` names the tenant's hooks, ``TENANT/REPO`` a repository's."""
    tenant, slash, repo = args.owner.partition("/")
    if not tenant or (slash and not repo) or "/" in repo:
        raise ClientError(f"{args.owner!r}: expected TENANT or TENANT/REPO")
    base = f"/tenants/{quoted(tenant)}"
    return base + (f"/repos/{quoted(repo.removesuffix('.git'))}/webhooks" if repo else "/webhooks")


def quota_bytes(text: str) -> int | None:
    """``10G``, ``500M``, ``1048576`` (bytes; K/M/G/T are powers of 1024), or ``none``."""
    if text.lower() in NO_QUOTA:
        return None
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)i?b?", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 500M, 10G) or none")
    return int(match.group(1)) * UNITS[match.group(2)]


def quota_path(args: argparse.Namespace) -> str:
    return REPO if args.repo else TENANT


def quota_line(obj: dict[str, Any], _args: argparse.Namespace) -> str:
    name = f"{obj['tenant']}/{obj['name']}" if "tenant" in obj else obj["name"]
    quota = obj.get("quota_bytes")
    size = obj.get("size_bytes")
    return (f"{name}: quota {'none' if quota is None else f'{quota} bytes'}"
            + (f", {size} bytes used" if size is not None else ""))


def rules_path(args: argparse.Namespace) -> str:
    return (REPO if args.repo else TENANT) + "/rules"


def rules_body(args: argparse.Namespace) -> Any:
    """The whole rule list from a JSON file, or stdin for ``-``: a list, or an
    object with ``rules`` (what ``rules show --json`` prints, so show → edit → update works)."""
    text = read_text(args.file)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ClientError(f"{args.file}: not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = data["rules"]
    if not isinstance(data, list):
        raise ClientError(f"{args.file}: expected a JSON array of rules (or {{\"rules\": [...]}})")
    return data


def show_rules(obj: dict[str, Any] | list[Any] | None, _args: argparse.Namespace) -> str:
    """``rule set ID: N rules`` and one JSON line per rule; a PUT may answer the set, the bare
    list or nothing, and each shows as what it has."""
    if obj is None:
        return "rules updated"
    if isinstance(obj, list):
        obj = {"id": "?", "rules": obj}
    rules = obj.get("rules") or []
    header = f"rule set {obj.get('id')}: {len(rules)} rule{'s' if len(rules) != 1 else ''}"
    return "\n".join([header, *(json.dumps(rule, ensure_ascii=False) for rule in rules)])


def pipeline_log(cmd: Command, args: argparse.Namespace, ctx: Context) -> int:
    """Print the log from the start; with ``-f`` go on reading until the pipeline is final
    and nothing new came (the API's offset protocol)."""
    transport = ctx.connect()
    path = resolve_path(cmd, args)
    offset = 0
    try:
        while True:
            reply = checked(transport.request("GET", path, params={"offset": str(offset)}))
            sys.stdout.write(reply.text)
            sys.stdout.flush()
            offset = int(reply.header(HEADER_OFFSET) or offset)
            final = (reply.header(HEADER_STATUS) or "") in FINAL_STATES
            if not args.follow or (final and not reply.text):
                return EXIT_OK
            if not reply.text:
                time.sleep(FOLLOW_INTERVAL)
    finally:
        transport.close()


VISIBILITY = Arg("visibility", "private (grants only), internal (every member reads), public", flag="--visibility",
                 field="visibility", choices=VISIBILITIES)
BUILDS = (Arg("builds_enabled", "run .gitserver/pipeline.toml on pushes", flag="--builds", field="builds_enabled",
              action="store_true", group="builds"),
          Arg("builds_enabled", "do not run builds", flag="--no-builds", field="builds_enabled",
              action="store_false", group="builds"))


COMMANDS = (
    # repo (no remove: repositories are never deleted, their history is protected)
    Command("repo", "list", "repositories of a tenant you can see", "GET", TENANT + "/repos", (T,),
            columns=("name", "visibility", "builds_enabled", "description")),
    Command("repo", "show", "one repository", "GET", REPO, (T, R)),
    Command("repo", "create", "create a protected repository", "POST", TENANT + "/repos",
            (T, Arg("name", "the new repository's name", field="name"), DESCRIPTION,
             Arg("visibility", "default: private", flag="--visibility", field="visibility", choices=VISIBILITIES,
                 default="private"), *BUILDS),
            say=lambda r, _a: f"repository {r['tenant']}/{r['name']} created: {r['ssh_url']}"),
    Command("repo", "update", "change a repository's description, visibility, builds or default branch", "PATCH",
            REPO, (T, R, DESCRIPTION, VISIBILITY, *BUILDS,
                   Arg("default_branch", "the branch clones check out", flag="--default-branch",
                       field="default_branch"))),
    # grant
    Command("grant", "list", "who has which permission on a repository", "GET", REPO + "/grants", (T, R),
            columns=("permission", "user", "group", "created_at")),
    Command("grant", "show", "the grant of one user or group", "GET", grant_path, (T, R, *WHO)),
    Command("grant", "create", "give a user or group a permission on a repository", "PUT", grant_path,
            (T, R, Arg("permission", "read, write or admin", field="permission", choices=PERMISSIONS), *WHO),
            say=grant_line),
    Command("grant", "update", "change a user's or group's permission", "PUT", grant_path,
            (T, R, Arg("permission", "read, write or admin", field="permission", choices=PERMISSIONS), *WHO),
            say=grant_line),
    Command("grant", "remove", "take a user's or group's grant away", "DELETE", grant_path, (T, R, *WHO),
            say=lambda _d, a: f"{'user ' + a.user if a.user else 'group ' + a.group} has no grant on "
                              f"{a.tenant}/{a.repo}"),
    # deploy-key
    Command("deploy-key", "list", "a repository's deploy keys", "GET", REPO + "/deploy-keys", (T, R),
            columns=("id", "fingerprint", "title", "write", "last_used_at")),
    Command("deploy-key", "show", "one deploy key", "GET", REPO + "/deploy-keys/{id}", (T, R, ID)),
    Command("deploy-key", "create", "add a deploy key (read-only unless --write)", "POST", REPO + "/deploy-keys",
            (T, R, Arg("key", "an OpenSSH public key line, a .pub file, or - for stdin"),
             Arg("title", "default: the key's comment", flag="--title"),
             Arg("write", "the key may push", flag="--write", action="store_true")),
            body=key_body,
            aliases=("add",)),
    Command("deploy-key", "remove", "remove a deploy key", "DELETE", REPO + "/deploy-keys/{id}", (T, R, ID),
            say=lambda _d, a: f"deploy key {a.id} of {a.tenant}/{a.repo} removed"),
    # webhook: of a repository (TENANT/REPO) or tenant-wide (TENANT); the hook's URL is not
    # "url", the dest of the global --url
    Command("webhook", "list", "webhooks of a repository or tenant", "GET", webhook_base, (OWNER,),
            columns=("id", "url", "events", "active", "has_secret")),
    Command("webhook", "show", "one webhook", "GET", lambda a: webhook_base(a) + "/{id}", (OWNER, ID)),
    Command("webhook", "create", "add a webhook", "POST", webhook_base,
            (OWNER, Arg("hook_url", "where to POST events", field="url", metavar="URL"),
             Arg("secret", "key of the X-Hub-Signature-256 HMAC", flag="--secret", field="secret"),
             Arg("events", "an event to send (repeat; default: all)", flag="--event", field="events",
                 action="append"),
             Arg("active", "create it paused", flag="--inactive", field="active", action="store_false"))),
    Command("webhook", "update", "change a webhook", "PATCH", lambda a: webhook_base(a) + "/{id}",
            (OWNER, ID, Arg("hook_url", "where to POST events", flag="--url", field="url", metavar="URL"),
             Arg("secret", "a new secret (empty: unsigned)", flag="--secret", field="secret"),
             Arg("events", "an event to send (repeat)", flag="--event", field="events", action="append"),
             Arg("active", "send again", flag="--active", field="active", action="store_true", group="on"),
             Arg("active", "pause it", flag="--inactive", field="active", action="store_false", group="on"))),
    Command("webhook", "remove", "delete a webhook", "DELETE", lambda a: webhook_base(a) + "/{id}", (OWNER, ID),
            say=lambda _d, a: f"webhook {a.id} of {a.owner} removed"),
    Command("webhook", "deliveries", "a webhook's deliveries, newest first", "GET",
            lambda a: webhook_base(a) + "/{id}/deliveries", (OWNER, ID),
            columns=("id", "event", "status", "attempts", "response_status", "created_at")),
    Command("webhook", "redeliver", "send a delivery again", "POST",
            lambda a: webhook_base(a) + "/{id}/deliveries/{delivery}/redeliver",
            (OWNER, ID, Arg("delivery", "the delivery's id", kind=positive)), body=lambda _a: None),
    # pipeline
    Command("pipeline", "list", "pipelines of a repository, newest first", "GET", REPO + "/pipelines",
            (T, R, Arg("status", "only pipelines in this state", flag="--status", query="status")),
            columns=("id", "kind", "status", "ref", "commit", "archive_tag", "created_at")),
    Command("pipeline", "show", "one pipeline and its steps", "GET", PIPELINE, (ID,)),
    Command("pipeline", "log", "a pipeline's log", "GET", PIPELINE + "/log",
            (ID, Arg("follow", "go on until the pipeline ends", flag="-f", action="store_true")),
            handler=pipeline_log),
    Command("pipeline", "cancel", "cancel a queued or running pipeline", "POST", PIPELINE + "/cancel", (ID,),
            body=lambda _a: None, say=lambda p, _a: f"pipeline {p['id']}: {p['status']}"),
    # push: the audit of who moved which ref
    Command("push", "list", "pushes of a repository, newest first", "GET", REPO + "/pushes",
            (T, R, Arg("state", "pending, done, recovered, failed, or all (default: done)", flag="--state",
                       query="state")),
            columns=("id", "user", "state", "ref_updates", "created_at")),
    # quota: of a tenant (site admins) or a repository (tenant admins)
    Command("quota", "show", "the disk quota and use of a tenant or repository", "GET", quota_path,
            (T, Arg("repo", "a repository (default: the tenant)", nargs="?")), say=quota_line),
    Command("quota", "update", "set or clear a disk quota", "PATCH", quota_path,
            (T, Arg("repo", "a repository (default: the tenant)", nargs="?"),
             Arg("quota_bytes", "a size (500M, 10G, bytes) or none", field="quota_bytes", kind=quota_bytes,
                 metavar="SIZE")),
            body=lambda a: {"quota_bytes": a.quota_bytes}, say=quota_line),
    # rules: protected references, the repository's or the tenant's defaults
    Command("rules", "show", "the ordered rule list of a repository or a tenant's default", "GET", rules_path,
            (T, Arg("repo", "a repository (default: the tenant's default rules)", nargs="?")), say=show_rules),
    Command("rules", "update", "replace the whole rule list with a JSON file", "PUT", rules_path,
            (T, Arg("repo", "a repository (default: the tenant's default rules)", nargs="?"),
             Arg("file", "a JSON array of rules, or - for stdin", flag="--file", required=True)),
            body=rules_body, say=show_rules),
)
