"""A multiplexed SSH connection (OpenSSH ControlMaster) must not outlive what it stood for."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.functional.conftest import GitServer


def test_disabled_user_cannot_run_git_over_an_existing_connection(server: GitServer) -> None:
    tenant = server.new_tenant()
    user = server.new_user(tenant)
    repo = server.new_repo(tenant, grants={user.name: "write"})
    control = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp")) / "s"
    options = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60")
    command = f"git-upload-pack '{tenant}/{repo}'"
    try:
        # upload-pack advertises (an empty repository: one flush packet), then meets EOF.
        first = server.ssh(user, command, options=options)
        assert first.stdout == "0000" and "ERROR:" not in first.stderr, first.stderr
        assert control.exists()  # the master stays up and serves the next command
        server.api("DELETE", f"/api/v1/tenants/{tenant}/users/{user.name}", token=server.admin_token)
        result = server.ssh(user, command, options=options)
        assert result.returncode == 128 and result.stdout == "", result.stdout
        assert "ERROR:" in result.stderr and "no longer" in result.stderr, result.stderr
    finally:
        subprocess.run([*server.ssh_command(user.key_path), "-o", f"ControlPath={control}", "-O", "exit",
                        "-p", str(server.ssh_port), "git@127.0.0.1"], capture_output=True, timeout=30)
