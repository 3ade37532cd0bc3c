"""The provenance commands: ``gitserver signing-key rotate`` and ``gitserver verify``.

Their parsers are added to the CLI's here so that ``gitserver/cli.py`` holds one line for them;
the work is imported only when a command runs (``gitserver hook`` parses the same arguments on
every push and must stay fast).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any, load_config: Any) -> None:
    """Add ``signing-key`` and ``verify`` to the CLI's subparsers; ``load_config(args)`` gives
    the Config of the server side commands."""
    key = sub.add_parser("signing-key", help="the server's signing key").add_subparsers(
        dest="signing_key_command", required=True)
    rotate = key.add_parser("rotate", help="start a new signing key; the old one stays published")
    rotate.set_defaults(fn=lambda args: rotate_command(load_config(args)))
    verify = sub.add_parser("verify", help="verify a repository's signed history (client side, no database)")
    verify.add_argument("clone_url", metavar="CLONE_URL")  # not "url": that is --url's
    verify.add_argument("--keys", metavar="URL|FILE",
                        help="allowed-signers file or its URL (default: the server's published keys)")
    verify.add_argument("--since", metavar="STATE",
                        help="state file: check the log only grew since it was written, then rewrite it")
    verify.set_defaults(fn=verify_command)


def rotate_command(cfg: Any) -> int:
    from gitserver.provenance import keys

    try:
        print(keys.rotate(cfg.signing_dir, cfg.signing_key))
    except keys.SigningKeyError as exc:
        print(f"gitserver: error: {exc}", file=sys.stderr)
        return 1
    print("restart the server's parts so that they sign with it", file=sys.stderr)
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from gitserver.provenance import verify

    return verify.main(args.clone_url, keys=args.keys, since=args.since)


def start_logs(runtime: Any) -> int:
    """Write every repository's reference log up to its refs on disk (after a restore); the
    number of entries written."""
    from gitserver.db.session import transaction
    from gitserver.provenance.pushlog import PushLog
    from gitserver.push import reconcile

    push_log = PushLog(runtime.config)
    with transaction(runtime.sessions) as session:
        repos = reconcile.list_repos(session)
    return sum(len(push_log.catch_up(runtime.sessions, runtime.store.path(r.tenant, r.name), r.id))
               for r in repos)
