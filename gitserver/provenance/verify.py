"""``gitserver verify <clone url> [--keys URL|FILE] [--since STATE]``: a consumer's check of a
repository's verifiable history, with git and the published keys only (no database, data dir
or token; a private repository's clone URL carries its own credentials).

It mirrors the repository into a temporary directory (every advertised ref: branches, tags,
``refs/gitserver/log``, ``refs/notes/attestations``), then runs the checks of
:mod:`gitserver.provenance.audit` against the trusted keys. With ``--since STATE`` it also
checks that the log only grew since STATE was written (an older backup restored over a newer
state shortens the log, which no signature can show), and on success writes STATE again.
Exit 0, or one line per breach and exit 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TextIO

import pygit2

from gitserver.provenance import audit, logread, trust
from gitserver.provenance.entry import LOG_REF

ENV_URL = "GITSERVER_URL"
ALLOWED_SIGNERS_PATH = "/api/v1/signing-keys/allowed_signers"
FETCH_TIMEOUT_SECONDS = 30
MAX_KEYS_BYTES = 1024 * 1024
STATE_VERSION = 1


class VerifyError(Exception):
    """Verification could not run (message for the user, one line)."""


def keys_source(url: str, keys: str | None, environ: dict[str, str]) -> str:
    """Where the trusted keys come from: ``--keys``, else ``$GITSERVER_URL``'s published keys,
    else the same host's for an HTTP clone URL."""
    if keys:
        return keys
    if environ.get(ENV_URL):
        return environ[ENV_URL].rstrip("/") + ALLOWED_SIGNERS_PATH
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{ALLOWED_SIGNERS_PATH}"
    raise VerifyError(f"no keys to verify with: pass --keys URL|FILE or set {ENV_URL} (the server's base URL)")


def load_keys(source: str) -> list[trust.TrustedKey]:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_SECONDS) as resp:
                text = resp.read(MAX_KEYS_BYTES).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            raise VerifyError(f"cannot fetch the keys from {source}: {exc}") from exc
    else:
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise VerifyError(f"cannot read the keys file {source}: {exc.strerror}") from exc
    try:
        trusted = trust.parse_allowed_signers(text)
    except trust.TrustError as exc:
        raise VerifyError(f"{source}: {exc}") from exc
    if not trusted:
        raise VerifyError(f"{source} holds no ed25519 key for namespace git")
    return trusted


def mirror(url: str, into: Path) -> pygit2.Repository:
    """Every advertised ref of ``url`` in a bare repository at ``into``."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    result = subprocess.run(["git", "clone", "--mirror", "--quiet", "--", url, str(into)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        # git's reason is its first ``fatal:`` line (a hint for the user may follow it).
        fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal:")]
        reason = fatal[0] if fatal else lines[-1] if lines else "git clone failed"
        raise VerifyError(f"cannot fetch {url}: {reason}")
    return pygit2.Repository(str(into))


def served_refs(repo: pygit2.Repository) -> dict[str, str]:
    return {ref.name: str(ref.target) for ref in repo.listall_reference_objects()
            if isinstance(ref.target, pygit2.Oid)}


def since_problem(state_path: Path, url: str, reading: logread.Reading) -> logread.Breach | None:
    """Whether the log still holds the tip STATE saw (it may only grow)."""
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot read the state file {state_path}: {exc}") from exc
    seen = state.get("tip")
    if not seen or seen in reading.commits:
        return None
    return (LOG_REF, f"the log no longer holds entry {seen[:12]}, its tip when {state_path} was written "
                     f"({state.get('entries')} entries, {state.get('written')}; now {len(reading.commits)}): "
                     "rewritten, or restored from an older state")


def write_state(state_path: Path, url: str, reading: logread.Reading) -> None:
    state = {"version": STATE_VERSION, "url": url, "tip": reading.tip, "entries": len(reading.commits),
             "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    tmp = state_path.with_name(f".{state_path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_path)


def verify(url: str, keys: str | None = None, since: str | None = None,
           environ: dict[str, str] | None = None) -> list[str]:
    """The breach lines (empty: all is well); VerifyError when it cannot run."""
    trusted = load_keys(keys_source(url, keys, dict(os.environ if environ is None else environ)))
    with tempfile.TemporaryDirectory(prefix="gitserver-verify-") as tmp:
        repo = mirror(url, Path(tmp) / "mirror.git")
        breaches, reading = audit.audit(repo, trusted, served_refs(repo))
        if since:
            problem = since_problem(Path(since), url, reading)
            if problem:
                breaches.append(problem)
        lines = [f"{ref}: {what}" for ref, what in breaches]
        if since and not lines:
            write_state(Path(since), url, reading)
        return lines


def main(url: str, keys: str | None = None, since: str | None = None, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    try:
        lines = verify(url, keys, since)
    except VerifyError as exc:
        print(f"gitserver verify: error: {exc}", file=err)
        return 1
    for line in lines:
        print(line, file=out)
    return 1 if lines else 0
