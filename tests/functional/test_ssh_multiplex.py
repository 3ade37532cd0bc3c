"""Sessions multiplexed over one SSH connection, as git-lfs opens them: its pure-SSH transfer
starts one ``git-lfs-transfer`` per worker (8 by default) through one OpenSSH ControlMaster
(git-lfs 3.5 and later always; 3.3 when XDG_RUNTIME_DIR is set). Real OpenSSH client, real
daemon, SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.functional.conftest import GitServer

SESSIONS = 8  # git-lfs's default lfs.concurrenttransfers
# version 1, then quit: the whole pure-SSH exchange of a worker that got no object.
VERSION_AND_QUIT = b"000eversion 1\n0000" + b"0009quit\n0000"
GREETING = b"000eversion=1\n000clocking\n0000"
ANSWER = GREETING + b"000fstatus 200\n0000" * 2


def test_eight_lfs_sessions_at_once_on_one_multiplexed_connection(server: GitServer, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    control = tmp_path / "master.sock"
    base = [*server.ssh_command(user.key_path), "-p", str(server.ssh_port), "-o", f"ControlPath={control}"]
    subprocess.run([*base, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-fN", "git@127.0.0.1"],
                   check=True, timeout=60, env=server.git_env)
    command = f"git-lfs-transfer /{tenant}/{repo}.git download"
    try:
        # All open at once: each waits for its input until every session has been started.
        clients = [subprocess.Popen([*base, "-o", "ControlMaster=no", "git@127.0.0.1", command],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=server.git_env) for _ in range(SESSIONS)]
        greetings = [client.stdout.read(len(GREETING)) for client in clients]  # type: ignore[union-attr]
        ends = [client.communicate(VERSION_AND_QUIT, timeout=60) for client in clients]
        answers = [greeting + out for greeting, (out, _) in zip(greetings, ends, strict=True)]
        assert answers == [ANSWER] * SESSIONS, [err for _, err in ends]
        assert [client.returncode for client in clients] == [0] * SESSIONS
    finally:
        subprocess.run([*base, "-O", "exit", "git@127.0.0.1"], timeout=30, env=server.git_env,
                       capture_output=True)
