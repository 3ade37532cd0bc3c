"""``gitserver login URL`` and ``gitserver logout [URL]``."""

from __future__ import annotations

import argparse
import getpass
import sys

from gitserver.client import credentials
from gitserver.client.errors import EXIT_ERROR, EXIT_OK, ClientError
from gitserver.client.http import RemoteApi, normalise_url
from gitserver.client.spec import API, checked

PROBE = API + "/tenants"  # any valid token may list the tenants it sees; a bad one gets 401
MAX_TOKEN = 8 * 1024


def read_token(args: argparse.Namespace) -> str:
    """``--token``, else stdin: a prompt without echo on a terminal, else its first line."""
    if args.token:
        token = args.token
    elif sys.stdin.isatty():
        token = getpass.getpass(f"API token for {args.url}: ")
    else:
        token = sys.stdin.readline(MAX_TOKEN)
    token = token.strip()
    if not token or any(not ch.isprintable() or ch.isspace() for ch in token):
        raise ClientError("give the API token with --token or on stdin (one line, no spaces)")
    return token


def login(args: argparse.Namespace) -> int:
    url = normalise_url(args.url)
    token = read_token(args)
    api = RemoteApi(url, token)
    try:
        checked(api.request("GET", PROBE, params={"limit": "1"}))
    finally:
        api.close()
    path = credentials.save(url, token)
    print(f"logged in to {url} (token stored in {path})")
    return EXIT_OK


def logout(args: argparse.Namespace) -> int:
    if not args.url:
        raise ClientError("gitserver logout: give the server's URL (or set GITSERVER_URL)")
    url = normalise_url(args.url)
    if credentials.forget(url):
        print(f"logged out of {url}")
        return EXIT_OK
    print(f"gitserver: no token stored for {url}", file=sys.stderr)
    return EXIT_ERROR
