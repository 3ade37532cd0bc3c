"""The ``gitserver`` command.

Imports are done inside each command: ``gitserver hook …`` runs on every push and must start
in milliseconds, without SQLAlchemy, asyncssh or falcon.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from gitserver.cmd import provenance as provenance_commands


def _config(args: argparse.Namespace) -> Any:
    from gitserver import config

    return config.load(args.config)


def cmd_hook(args: argparse.Namespace) -> int:
    from gitserver.push.hookrun import main as hook_main

    return hook_main(args.name)


def cmd_init(args: argparse.Namespace) -> int:
    from gitserver.runtime import initialise

    cfg = _config(args)
    for line in initialise(cfg):
        print(line)
    print(f"gitserver data dir ready: {cfg.data_dir}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gitserver.db.session import upgrade

    upgrade(_config(args).effective_database_url)
    print("database is at the newest migration")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gitserver.cmd.supervisor import serve

    return serve(_config(args), config_file=args.config)


def cmd_ssh(args: argparse.Namespace) -> int:
    from gitserver.cmd import wiring
    from gitserver.observe.logs import setup_logging

    cfg = _config(args)
    from gitserver.observe import metrics

    metrics.setup(cfg, clean=True)
    setup_logging(cfg, "ssh")
    return wiring.run_ssh(cfg)


def cmd_api(args: argparse.Namespace) -> int:
    from gitserver.cmd import wiring
    from gitserver.observe.logs import setup_logging

    cfg = _config(args)
    from gitserver.observe import metrics

    metrics.setup(cfg, clean=True)
    setup_logging(cfg, "api")
    from gitserver.observe import graphite

    graphite.start()  # only when GRAPHITE_* is set
    return wiring.run_api(cfg)


def cmd_worker(args: argparse.Namespace) -> int:
    from gitserver.cmd import wiring
    from gitserver.observe.logs import setup_logging

    cfg = _config(args)
    from gitserver.observe import metrics

    metrics.setup(cfg, clean=True)
    setup_logging(cfg, "worker")
    return wiring.run_worker(cfg, concurrency=args.concurrency)


def cmd_check(args: argparse.Namespace) -> int:
    from gitserver.cmd import check
    from gitserver.observe.logs import setup_logging
    from gitserver.runtime import Runtime

    cfg = _config(args)
    setup_logging(cfg, "check")
    runtime = Runtime.create(cfg, pool_size=1)
    try:
        return check.run(runtime, repair=args.repair)
    finally:
        runtime.dispose()


def cmd_maintain(args: argparse.Namespace) -> int:
    from gitserver.db.session import transaction
    from gitserver.git import maintain as git_maintain
    from gitserver.observe.logs import setup_logging
    from gitserver.pipelines import maintain
    from gitserver.policy.errors import InvalidInput, NotFound
    from gitserver.push import reconcile
    from gitserver.runtime import Runtime

    cfg = _config(args)
    setup_logging(cfg, "maintain")
    runtime = Runtime.create(cfg, pool_size=1)
    try:
        with transaction(runtime.sessions) as session:
            known = {r.full_name: r for r in reconcile.list_repos(session)}
        for name in args.repos:
            if name.count("/") != 1:
                raise InvalidInput(f"{name!r}: expected TENANT/REPO")
            if name not in known:
                raise NotFound(f"repository {name} does not exist")
        chosen = args.repos or sorted(known)
        failed = 0
        for name in chosen:
            path = runtime.store.path(known[name].tenant, known[name].name)
            if not path.is_dir():
                print(f"{name}: not on disk; skipped")
                continue
            before = git_maintain.stats(path)
            if not (args.repos or args.all
                    or git_maintain.needs_maintenance(before, maintain.thresholds(cfg))):
                continue
            try:
                after = maintain.maintain_repo(path, cfg, label=name)
            except git_maintain.MaintenanceError as exc:
                print(f"{name}: failed: {exc}", file=sys.stderr)
                failed += 1
                continue
            if after is None:
                print(f"{name}: maintenance is already running; skipped")
                continue
            print(f"{name}: packs {before.packs} -> {after.packs}, loose objects {before.loose} -> "
                  f"{after.loose}, bitmap {'yes' if after.bitmap else 'no'}, "
                  f"commit-graph {'yes' if after.commit_graph else 'no'}")
        return 1 if failed else 0
    finally:
        runtime.dispose()


def _with_session(args: argparse.Namespace, fn: Any) -> int:
    from gitserver.db.session import transaction
    from gitserver.runtime import Runtime

    runtime = Runtime.create(_config(args), pool_size=1)
    try:
        with transaction(runtime.sessions) as session:
            fn(session, runtime)
    finally:
        runtime.dispose()
    return 0


def cmd_site_admin_token(args: argparse.Namespace) -> int:
    """``token create --site-admin``: written to the database, because no API call makes one
    (it is how the first token is made)."""
    from gitserver.admin import tokens

    return _with_session(args, lambda session, _runtime: print(
        tokens.create_token(session, user=None, site_admin=True, name=args.name or "")[1]))


def cmd_admin(args: argparse.Namespace) -> int:
    """A command of the client's table (``gitserver.client``): remote with ``--url``, else on
    the data dir through the API built in this process."""
    from gitserver.client.commands import run_admin

    def local_api() -> Any:
        from gitserver.cmd.local_api import LocalApi

        return LocalApi(_config(args))

    return run_admin(args, local_api, {"site-admin-token": cmd_site_admin_token})


def cmd_backup(args: argparse.Namespace) -> int:
    from gitserver.cmd.backups import backup_command

    return backup_command(_config(args), args.file)


def cmd_restore(args: argparse.Namespace) -> int:
    from gitserver.cmd.backups import restore_command

    return restore_command(_config(args), args.file)


def cmd_login(args: argparse.Namespace) -> int:
    from gitserver.client.login import login

    return login(args)


def cmd_logout(args: argparse.Namespace) -> int:
    from gitserver.client.login import logout

    args.url = args.logout_url or args.url
    return logout(args)


def cmd_completion(args: argparse.Namespace) -> int:
    from gitserver.client.completion import script

    print(script(build_parser(), args.shell), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitserver", description="Self-hosted git with protected history.")
    parser.add_argument("--config", help="TOML config file (default: $GITSERVER_CONFIG)")
    parser.add_argument("--url",
                        help="run admin commands on this server through its REST API (default: $GITSERVER_URL; "
                             "none: on the local data dir)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("init", help="create data dir, host keys and database (idempotent)").set_defaults(fn=cmd_init)
    sub.add_parser("serve", help="run SSH daemon, HTTP API and workers together").set_defaults(fn=cmd_serve)
    sub.add_parser("ssh", help="run the SSH daemon alone").set_defaults(fn=cmd_ssh)
    sub.add_parser("api", help="run the HTTP API (gunicorn) alone").set_defaults(fn=cmd_api)
    worker = sub.add_parser("worker", help="run pipeline workers alone")
    worker.add_argument("--concurrency", type=int, default=None, help="default: GITSERVER_WORKERS")
    worker.set_defaults(fn=cmd_worker)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(fn=cmd_db_upgrade)

    chk = sub.add_parser("check", help="verify the push ledger, archives and hooks (non-zero on a breach)")
    chk.add_argument("--repair", action="store_true",
                     help="record what the ledger misses and reinstall hooks; never moves or deletes a ref")
    chk.set_defaults(fn=cmd_check)
    mnt = sub.add_parser("maintain", help="repack repositories and write bitmaps and commit-graphs now")
    mnt.add_argument("repos", nargs="*", metavar="TENANT/REPO",
                     help="maintain these now; none: every repository over a maintenance threshold")
    mnt.add_argument("--all", action="store_true", help="with no names: every repository, over a threshold or not")
    mnt.set_defaults(fn=cmd_maintain)
    hook = sub.add_parser("hook", help="run a git hook (used by git, not people)")
    hook.add_argument("name", choices=["pre-receive", "proc-receive", "post-receive"])
    hook.set_defaults(fn=cmd_hook)

    backup = sub.add_parser("backup", help="write an online, consistent backup of the whole server")
    backup.add_argument("file", metavar="FILE", help="the backup file to write, or - for stdout")
    backup.set_defaults(fn=cmd_backup)
    restore = sub.add_parser("restore", help="restore a backup into an empty data dir and database")
    restore.add_argument("file", metavar="FILE", help="a file written by `gitserver backup`, or - for stdin")
    restore.set_defaults(fn=cmd_restore)

    from gitserver.client import commands as admin_commands

    provenance_commands.add_commands(sub, _config)

    admin_commands.add_commands(sub)
    login = sub.add_parser("login", help="check an API token against a server and store it for --url")
    login.add_argument("url", metavar="URL", help="the server, e.g. https://git.example.com")
    login.add_argument("--token", help="the token (default: read from stdin)")
    login.set_defaults(fn=cmd_login)
    logout = sub.add_parser("logout", help="forget the token stored for a server")
    logout.add_argument("logout_url", nargs="?", metavar="URL", help="default: --url or GITSERVER_URL")
    logout.set_defaults(fn=cmd_logout)
    completion = sub.add_parser("completion",
                                help="print a shell completion script: source <(gitserver completion bash)")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(fn=cmd_completion)
    return parser


# verify is a client too: it reads a clone URL and the published keys, never the data dir.
REMOTE_CAPABLE = ("cmd_admin", "cmd_login", "cmd_logout", "verify_command")


def main(argv: Sequence[str] | None = None) -> int:
    from gitserver.client.commands import legacy_argv

    args = build_parser().parse_args(legacy_argv(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "hook":
        return args.fn(args)
    from gitserver.client.errors import ClientError, exit_code
    from gitserver.policy.errors import GitserverError
    from gitserver.process import depwarnings

    depwarnings.quiet()
    fn = getattr(args, "fn", cmd_admin)
    if args.url and fn.__name__ not in REMOTE_CAPABLE:
        print(f"gitserver: error: `gitserver {args.command}` runs on the server's data dir; --url is for the "
              "admin commands", file=sys.stderr)
        return 1
    args.url = args.url or os.environ.get("GITSERVER_URL") or None
    try:
        return fn(args)
    except ClientError as exc:
        print(f"gitserver: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except GitserverError as exc:
        print(f"gitserver: error: {exc.message}", file=sys.stderr)
        return exit_code(exc.status) if fn is cmd_admin else 1
    except BrokenPipeError:
        # `gitserver repo list acme | head`: the reader is gone; no traceback, no second error
        # when the interpreter flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
