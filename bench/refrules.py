"""``python -m bench.refrules``: what protected-reference rules cost a push (docs/ref-rules.md).

Starts gitserver (SQLite, the SSH daemon under the subreaper as in :mod:`bench`), and measures
the server's CPU (the SSH daemon's process tree: git, the hooks, ssh-keygen) of real pushes
over OpenSSH, alternating so drift hits every case alike:

- a small push (one commit) into a repository with no rules, and into one whose only rule
  does not need the commits (the cost of looking the rules up);
- a small push of one SSH-signed commit under ``require_signed``;
- a push of ``--commits`` (default 1,000) SSH-signed commits under ``require_signed``.

Prints a Markdown table of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.servers import TENANT, USER, GitServer, tree_cpu

EMAIL = "bench@example.org"


def git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr}")
    return result.stdout


def signed_history(env: dict[str, str], work: Path, key: Path, count: int) -> None:
    """``count`` SSH-signed commits (git fast-import cannot sign; git commit does, one each)."""
    for i in range(count):
        (work / "f.txt").write_text(f"{time.monotonic_ns()} {i}\n")
        git(env, "add", "f.txt", cwd=work)
        git(env, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", f"c{i}", cwd=work)


def setup(gs: GitServer, public_key: str, rules: dict[str, list[dict[str, object]]]) -> None:
    from gitserver.admin import grants, keys, refrules, repos, signing, tenants, users
    from gitserver.policy import access

    with gs.db() as session:
        tenant = tenants.create_tenant(session, TENANT)
        user = users.create_user(session, tenant, USER, "member")
        keys.add_user_key(session, user, public_key, "bench")
        signing.set_emails(session, user, [EMAIL])
        admin = access.Principal(kind=access.PrincipalKind.SITE_ADMIN)
        for name, listing in rules.items():
            repo = repos.create_repo(session, gs.runtime.store, tenant, name)
            grants.set_grant(session, repo, "write", user=user)
            if listing:
                refrules.set_rules(session, tenant, repo, listing, admin)


def push_cpu(gs: GitServer, env: dict[str, str], work: Path, repo: str, ref: str) -> float:
    before = tree_cpu(gs.accounting_root)
    git(env, "push", "-q", gs.url(repo), f"HEAD:{ref}", cwd=work)
    time.sleep(0.3)  # the hook thread finishes recording after git's answer
    return tree_cpu(gs.accounting_root) - before


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--commits", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-refrules-"))
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = {"HOME": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": EMAIL, "GIT_COMMITTER_NAME": "Bench",
           "GIT_COMMITTER_EMAIL": EMAIL,
           "GIT_SSH_COMMAND": f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
                              "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"}
    gs = GitServer(root)
    gs.start()
    try:
        signed = [{"pattern": "refs/heads/*", "require_signed": True}]
        setup(gs, key.with_suffix(".pub").read_text().strip(), {
            "none": [], "access": [{"pattern": "refs/heads/*", "push": {"users": [USER]}}],
            "signed": signed, "many": signed})
        work = root / "work"
        git(env, "init", "-q", "-b", "main", str(work))
        signed_history(env, work, key, 1)
        samples: dict[str, list[float]] = {"no rules": [], "push rule only": [], "require_signed, 1 commit": []}
        for i in range(args.rounds):
            signed_history(env, work, key, 1)  # one new signed commit per round, for every case
            for case, repo in (("no rules", "none"), ("push rule only", "access"),
                               ("require_signed, 1 commit", "signed")):
                samples[case].append(push_cpu(gs, env, work, repo, f"refs/heads/b{i}"))
        many = root / "many"
        git(env, "init", "-q", "-b", "main", str(many))
        signed_history(env, many, key, args.commits)
        samples[f"require_signed, {args.commits} commits"] = [push_cpu(gs, env, many, "many", "refs/heads/main")]
    finally:
        gs.stop()
    print("| push | server CPU (median, s) | samples |\n|---|---|---|")
    for case, values in samples.items():
        print(f"| {case} | {statistics.median(values):.3f} | {json.dumps([round(v, 3) for v in values])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
