"""The ``gitserver`` command.

Imports are done inside each command: ``gitserver hook …`` runs on every push and must start
in milliseconds, without SQLAlchemy, asyncssh or falcon.
"""

from __future__ import annotations

import argparse
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


def cmd_token_create(args: argparse.Namespace) -> int:
    from gitserver.admin import tenants, tokens, users

    if not args.site_admin and not (args.tenant and args.user):
        raise SystemExit("gitserver token create: give --site-admin, or --tenant and --user")

    def create(session: Any, _runtime: Any) -> None:
        user = None
        if not args.site_admin:
            user = users.get_user(session, tenants.get_tenant(session, args.tenant), args.user)
        _row, secret = tokens.create_token(session, user=user, site_admin=args.site_admin,
                                           name=args.name or "")
        print(secret)

    return _with_session(args, create)


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from gitserver.admin import tenants

    return _with_session(args, lambda s, _r: print(
        f"tenant {tenants.create_tenant(s, args.name, args.description).name} created"))


def cmd_user_create(args: argparse.Namespace) -> int:
    from gitserver.admin import tenants, users

    def create(session: Any, _runtime: Any) -> None:
        user = users.create_user(session, tenants.get_tenant(session, args.tenant), args.name, args.role)
        print(f"user {args.tenant}/{user.name} created ({user.role})")

    return _with_session(args, create)


def cmd_key_add(args: argparse.Namespace) -> int:
    from gitserver.admin import keys, tenants, users
    from gitserver.policy.errors import InvalidInput

    text = sys.stdin.read() if args.key == "-" else args.key
    if args.key != "-" and not args.key.startswith(("ssh-", "ecdsa-", "sk-")):
        try:
            with open(args.key, encoding="utf-8") as fh:
                text = fh.read(64 * 1024)
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read key file {args.key}: {getattr(exc, 'strerror', None) or exc}",
                               field="key") from exc

    def add(session: Any, _runtime: Any) -> None:
        user = users.get_user(session, tenants.get_tenant(session, args.tenant), args.user)
        key = keys.add_user_key(session, user, text, args.title or "")
        print(f"{key.bits} {key.fingerprint} {key.title or 'no comment'} ({key.key_type})")

    return _with_session(args, add)


def cmd_key_import(args: argparse.Namespace) -> int:
    """Import an authorized_keys file: one report line per refused key, then a summary.
    Exit 0 when every key line was imported, 1 when any was refused."""
    from gitserver.admin import keys, tenants, users
    from gitserver.policy.errors import InvalidInput

    name = "stdin" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}", field="file") from exc
    outcome: list[keys.KeyImport] = []

    def import_keys(session: Any, _runtime: Any) -> None:
        user = users.get_user(session, tenants.get_tenant(session, args.tenant), args.user)
        outcome.append(keys.import_user_keys(session, user, text.splitlines(),
                                             skip_refused=args.skip_refused))

    _with_session(args, import_keys)
    report = outcome[0]
    for item in report.refused:
        print(f"{name}:{item.line}: refused: {item.problem}", file=sys.stderr)
    who = f"{args.tenant}/{args.user}"
    if report.refused and not report.added and not args.skip_refused:
        print(f"gitserver: nothing imported for {who}: {len(report.refused)} of {report.total} key lines "
              "refused (fix them, or give --skip-refused to import the others)", file=sys.stderr)
    else:
        print(f"imported {report.added} of {report.total} keys for {who}")
    return 1 if report.refused else 0


def cmd_repo_create(args: argparse.Namespace) -> int:
    from gitserver.admin import tenants
    from gitserver.net.urls import ssh_clone_url
    from gitserver.pipelines import oncreate

    def create(session: Any, runtime: Any) -> None:
        tenant = tenants.get_tenant(session, args.tenant)
        repo = oncreate.create_repository(session, runtime.store, tenant, args.name,
                                          args.description or "", args.visibility)
        print(f"repository {tenant.name}/{repo.name} created: "
              f"{ssh_clone_url(runtime.config.ssh_base_url, tenant.name, repo.name)}")

    return _with_session(args, create)


def cmd_grant(args: argparse.Namespace) -> int:
    from gitserver.admin import grants, groups, repos, tenants, users

    def grant(session: Any, _runtime: Any) -> None:
        tenant = tenants.get_tenant(session, args.tenant)
        repo = repos.get_repo(session, tenant, args.repo)
        if args.group:
            grants.set_grant(session, repo, args.permission, group=groups.get_group(session, tenant, args.group))
            print(f"group {args.group} has {args.permission} on {tenant.name}/{repo.name}")
        else:
            grants.set_grant(session, repo, args.permission, user=users.get_user(session, tenant, args.user))
            print(f"user {args.user} has {args.permission} on {tenant.name}/{repo.name}")

    return _with_session(args, grant)


def cmd_backup(args: argparse.Namespace) -> int:
    from gitserver.cmd.backups import backup_command

    return backup_command(_config(args), args.file)


def cmd_restore(args: argparse.Namespace) -> int:
    from gitserver.cmd.backups import restore_command

    return restore_command(_config(args), args.file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitserver", description="Self-hosted git with protected history.")
    parser.add_argument("--config", help="TOML config file (default: $GITSERVER_CONFIG)")
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

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="print a new API token")
    create.add_argument("--site-admin", action="store_true", help="a token with every right")
    create.add_argument("--tenant")
    create.add_argument("--user")
    create.add_argument("--name", default="")
    create.set_defaults(fn=cmd_token_create)

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

    provenance_commands.add_commands(sub, _config)

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="tenant_command", required=True)
    tc = tenant.add_parser("create")
    tc.add_argument("name")
    tc.add_argument("--description", default="")
    tc.set_defaults(fn=cmd_tenant_create)

    user = sub.add_parser("user", help="users").add_subparsers(dest="user_command", required=True)
    uc = user.add_parser("create")
    uc.add_argument("tenant")
    uc.add_argument("name")
    uc.add_argument("--role", default="member", choices=["member", "admin", "site-admin"])
    uc.set_defaults(fn=cmd_user_create)

    key = sub.add_parser("key", help="SSH keys").add_subparsers(dest="key_command", required=True)
    ka = key.add_parser("add")
    ka.add_argument("tenant")
    ka.add_argument("user")
    ka.add_argument("key", help="an OpenSSH public key line, a .pub file, or - for stdin")
    ka.add_argument("--title", default="")
    ka.set_defaults(fn=cmd_key_add)
    ki = key.add_parser("import", help="add every key of an authorized_keys file, all or nothing")
    ki.add_argument("tenant")
    ki.add_argument("user")
    ki.add_argument("file", help="an authorized_keys file (one key per line), or - for stdin")
    ki.add_argument("--skip-refused", action="store_true",
                    help="import the acceptable keys even when some lines are refused")
    ki.set_defaults(fn=cmd_key_import)

    repo = sub.add_parser("repo", help="repositories").add_subparsers(dest="repo_command", required=True)
    rc = repo.add_parser("create")
    rc.add_argument("tenant")
    rc.add_argument("name")
    rc.add_argument("--description", default="")
    rc.add_argument("--visibility", default="private", choices=["private", "internal", "public"])
    rc.set_defaults(fn=cmd_repo_create)

    grant = sub.add_parser("grant", help="give a user or group a permission on a repository")
    grant.add_argument("tenant")
    grant.add_argument("repo")
    grant.add_argument("permission", choices=["read", "write", "admin"])
    who = grant.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--group")
    grant.set_defaults(fn=cmd_grant)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "hook":
        return args.fn(args)
    from gitserver.policy.errors import GitserverError
    from gitserver.process import depwarnings

    depwarnings.quiet()

    try:
        return args.fn(args)
    except GitserverError as exc:
        print(f"gitserver: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
