"""Every admin command of the CLI, and how one runs: remotely with ``--url`` (or
``GITSERVER_URL``), else on the local data dir."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from gitserver.client import credentials, people, repositories
from gitserver.client.errors import ClientError
from gitserver.client.register import register
from gitserver.client.spec import Command, Context, run
from gitserver.client.transport import Transport

URL_ENV = "GITSERVER_URL"
TOKEN_ENV = "GITSERVER_TOKEN"  # for scripts and CI, instead of a stored login

COMMANDS: tuple[Command, ...] = (*people.COMMANDS, *repositories.COMMANDS)
RESOURCES = ("tenant", "user", "key", "group", "repo", "grant", "deploy-key", "token", "webhook", "pipeline",
             "push", "quota", "rules")
HELPS = {
    "tenant": "tenants", "user": "users of a tenant", "key": "users' SSH keys", "group": "groups and members",
    "repo": "repositories", "grant": "permissions on repositories", "deploy-key": "repositories' deploy keys",
    "token": "API tokens", "webhook": "webhooks of repositories and tenants", "pipeline": "pipelines and logs",
    "push": "the push audit", "quota": "disk quotas", "rules": "protected-reference rules",
}
# ``gitserver grant TENANT REPO PERMISSION --user U``, the form before the verbs, is ``grant create``.
LEGACY_VERBLESS = {"grant": "create"}


def add_commands(sub: Any) -> None:
    register(sub, COMMANDS, HELPS)


def legacy_argv(argv: list[str]) -> list[str]:
    """Insert the verb a command had none of before (``grant``): its old scripts keep working."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # the global options and their values
        i += 1 if "=" in argv[i] or argv[i] in ("-h", "--help") else 2
    if i + 1 < len(argv) and argv[i] in LEGACY_VERBLESS:
        verbs = {c.verb for c in COMMANDS if c.resource == argv[i]} | {"-h", "--help"}
        if argv[i + 1] not in verbs:
            return [*argv[:i + 1], LEGACY_VERBLESS[argv[i]], *argv[i + 1:]]
    return argv


def remote_token(url: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV) or credentials.token_for(url)
    if not token:
        raise ClientError(f"not logged in to {url}: run `gitserver login {url}` (or set {TOKEN_ENV})",
                          status=401)
    return token


def run_admin(args: argparse.Namespace, local_connect: Callable[[], Transport],
              local: Mapping[str, Callable[[argparse.Namespace], int]]) -> int:
    """Run the table command ``args`` named, remotely when ``--url`` was given."""
    cmd: Command = args.command_spec
    if args.url:
        from gitserver.client.http import RemoteApi, normalise_url

        url = normalise_url(args.url)
        ctx = Context(connect=lambda: RemoteApi(url, remote_token(url)), remote=True)
    else:
        ctx = Context(connect=local_connect, remote=False, local=local)
    return run(cmd, args, ctx)


def complain(message: str) -> None:
    print(f"gitserver: error: {message}", file=sys.stderr)
