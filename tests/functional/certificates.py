"""Helpers for the SSH certificate tests: a CA made and used by the real ``ssh-keygen -s``, and
the real OpenSSH client logging in with ``CertificateFile``."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
from pathlib import Path

from tests.functional.conftest import GitServer

_serials = itertools.count(100)


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"ssh-keygen {' '.join(args)}: {result.stderr}"
    return result


def new_key(directory: Path, name: str) -> Path:
    path = directory / name
    keygen("-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path))
    return path


@dataclasses.dataclass
class Ca:
    """A CA key pair in ``directory``; :meth:`sign` issues certificates like an admin would."""

    path: Path

    @classmethod
    def new(cls, directory: Path, name: str) -> Ca:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(new_key(directory, name))

    @property
    def public(self) -> str:
        return self.path.with_suffix(".pub").read_text().strip()

    def sign(self, key: Path, *, principals: str | None, key_id: str = "", serial: int | None = None,
             validity: str = "-5m:+1h", options: tuple[str, ...] = (), host: bool = False) -> Path:
        """Certificate for ``key`` (``<key>-cert.pub``); ``principals`` None signs none."""
        serial = next(_serials) if serial is None else serial
        args = ["-q", "-s", str(self.path), "-I", key_id or key.name, "-z", str(serial), "-V", validity]
        if principals is not None:
            args += ["-n", principals]
        if host:
            args.append("-h")
        for option in options:
            args += ["-O", option]
        keygen(*args, str(key.with_suffix(".pub")))
        return key.parent / f"{key.name}-cert.pub"


@dataclasses.dataclass
class Holder:
    """A private key with its certificate, as a user's ~/.ssh holds them."""

    key: Path
    cert: Path

    def options(self) -> list[str]:
        return ["-i", str(self.key), "-o", f"CertificateFile={self.cert}", "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20"]


def issue(ca: Ca, directory: Path, name: str, **kwargs: object) -> Holder:
    """A fresh key (registered nowhere) and its certificate from ``ca``."""
    key = new_key(directory, name)
    return Holder(key, ca.sign(key, **kwargs))  # type: ignore[arg-type]


UNCHECKED_HOST = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")


def ssh(srv: GitServer, holder: Holder, *args: str,
        host_options: tuple[str, ...] = UNCHECKED_HOST) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", *holder.options(), *host_options, "-p", str(srv.ssh_port), "git@127.0.0.1", *args]
    return subprocess.run(argv, env=srv.git_env, text=True, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def git(srv: GitServer, holder: Holder, *args: str, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    command = " ".join(["ssh", *holder.options(), *UNCHECKED_HOST])
    result = subprocess.run(["git", *args], cwd=cwd, env={**srv.git_env, "GIT_SSH_COMMAND": command},
                            text=True, capture_output=True, timeout=120)
    if check:
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    """What OpenSSH shows for a refused login."""
    return result.returncode == 255 and "Permission denied (publickey)" in result.stderr
