"""Git clients other than git itself, run one operation per process.

    python -m tests.functional.compat_clients <client> <op> [options]

``client`` is ``libgit2`` (pygit2), ``dulwich`` (dulwich over a paramiko SSH vendor) or
``jsch-era`` (dulwich over paramiko restricted to what JSch 0.1.54 speaks: an ECDSA host key,
aes128-ctr, ECDH or DH-GEX key exchange, HMAC-SHA2/SHA1 and SHA-1 ``ssh-rsa`` signatures).
Each operation prints one JSON object on stdout. A separate process per operation keeps a
client crash (libgit2 aborted with heap corruption on an RSA key before server-sig-algs lost
its repeats) a failed test instead of a dead test session.

dulwich 1.x ships its paramiko vendor only in its source tree (``contrib/``), so the vendor
here is a small one of our own with the same job: run the git command on a paramiko channel.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

# --- libgit2 -------------------------------------------------------------------------------


def _pygit2_callbacks(key: str | None) -> Any:
    import pygit2

    class Callbacks(pygit2.RemoteCallbacks):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.rejected: dict[str, str] = {}

        def credentials(self, url: str, username_from_url: str | None, allowed_types: Any) -> Any:
            if key is None:
                raise RuntimeError("no key given")
            return pygit2.Keypair(username_from_url or "git", key + ".pub", key, "")

        def certificate_check(self, certificate: Any, valid: bool, host: bytes) -> bool:
            return True  # a test server on loopback with a fresh host key

        def push_update_reference(self, refname: str, message: str | None) -> None:
            if message:
                self.rejected[refname] = message

    return Callbacks()


def libgit2(op: str, args: argparse.Namespace) -> dict[str, Any]:
    import pygit2

    callbacks = _pygit2_callbacks(args.key)
    if op == "clone":
        repo = pygit2.clone_repository(args.url, args.dest, callbacks=callbacks, depth=args.depth or 0)
        return {"head": str(repo.head.target)}
    repo = pygit2.Repository(args.dest)
    remote = repo.remotes.create_anonymous(args.url)
    if op == "fetch":
        remote.fetch(["+refs/heads/*:refs/remotes/origin/*"], callbacks=callbacks)
        return {"refs": {r: str(repo.references[r].target) for r in repo.references
                         if r.startswith("refs/remotes/origin/")}}
    remote.push([args.refspec], callbacks=callbacks, push_options=args.push_option or None)
    return {"rejected": callbacks.rejected}


# --- dulwich over paramiko -----------------------------------------------------------------

# What JSch 0.1.54 (2016; Jenkins agents, Eclipse, JGit 4.x) can negotiate with the server.
JSCH_ERA = {
    "ciphers": ("aes128-ctr",),
    "keys": ("ecdsa-sha2-nistp256",),
    "kex": ("ecdh-sha2-nistp256", "diffie-hellman-group-exchange-sha256"),
    "macs": ("hmac-sha2-256", "hmac-sha1"),
    "pubkeys": ("ecdsa-sha2-nistp256",),
}


def _disabled_algorithms(allowed: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    import paramiko

    known = {"ciphers": paramiko.Transport._preferred_ciphers,
             "keys": paramiko.Transport._preferred_keys,
             "kex": paramiko.Transport._preferred_kex,
             "macs": paramiko.Transport._preferred_macs,
             "pubkeys": paramiko.Transport._preferred_pubkeys}
    return {kind: [alg for alg in known[kind] if alg not in names] for kind, names in allowed.items()}


class _Channel:
    """What dulwich's SSH client reads, writes and closes: one paramiko exec channel."""

    def __init__(self, client: Any, channel: Any) -> None:
        self.client = client
        self.channel = channel
        self.stderr = io.BytesIO()

    def can_read(self) -> bool:
        return bool(self.channel.recv_ready())

    def write(self, data: bytes) -> None:
        self.channel.sendall(data)

    def read(self, n: int | None = None) -> bytes:
        data = self.channel.recv(n or 65536)
        want = n or 0
        while len(data) < want:  # dulwich expects exactly n bytes unless the channel ends
            more = self.channel.recv(want - len(data))
            if not more:
                break
            data += more
        while self.channel.recv_stderr_ready():
            self.stderr.write(self.channel.recv_stderr(65536))
        return data

    def close(self) -> None:
        self.channel.close()
        self.client.close()


class ParamikoVendor:
    def __init__(self, disabled_algorithms: dict[str, list[str]] | None = None) -> None:
        self.disabled_algorithms = disabled_algorithms

    def run_command(self, host: str, command: bytes | str, username: str | None = None,
                    port: int | None = None, password: str | None = None,
                    key_filename: str | None = None, ssh_command: str | None = None,
                    protocol_version: int | None = None, **_: Any) -> _Channel:
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # loopback test server
        client.connect(host, port=port or 22, username=username or "git", key_filename=key_filename,
                       allow_agent=False, look_for_keys=False, timeout=30,
                       disabled_algorithms=self.disabled_algorithms)
        channel = client.get_transport().open_session()
        if protocol_version:
            channel.set_environment_variable("GIT_PROTOCOL", f"version={protocol_version}")
        channel.exec_command(command.decode() if isinstance(command, bytes) else command)
        return _Channel(client, channel)


def dulwich(op: str, args: argparse.Namespace, jsch_era: bool = False) -> dict[str, Any]:
    import dulwich.client
    from dulwich import porcelain

    disabled = _disabled_algorithms(JSCH_ERA) if jsch_era else None
    dulwich.client.get_ssh_vendor = lambda: ParamikoVendor(disabled)  # type: ignore[assignment]
    err = io.BytesIO()
    transport = {"key_filename": args.key} if args.key else {}
    if op == "clone":
        repo = porcelain.clone(args.url, args.dest, depth=args.depth, errstream=err, **transport)
        return {"head": repo.head().decode()}
    if op == "fetch":
        result = porcelain.fetch(args.dest, args.url, errstream=err, **transport)
        return {"refs": {k.decode(): v.decode() for k, v in result.refs.items()
                         if k.startswith(b"refs/heads/") and v}}
    force = args.refspec.startswith("+")
    result = porcelain.push(args.dest, args.url, args.refspec.lstrip("+"), force=force,
                            errstream=err, push_options=args.push_option, **transport)
    return {"rejected": {ref.decode(): str(error) for ref, error in (result.ref_status or {}).items()
                         if error is not None}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=("libgit2", "dulwich", "jsch-era"))
    parser.add_argument("op", choices=("clone", "fetch", "push"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--key")
    parser.add_argument("--depth", type=int)
    parser.add_argument("--refspec")
    parser.add_argument("--push-option", action="append")
    args = parser.parse_args(argv)
    try:
        if args.client == "libgit2":
            result = libgit2(args.op, args)
        else:
            result = dulwich(args.op, args, jsch_era=args.client == "jsch-era")
    except Exception as exc:  # noqa: BLE001  (what the client's user would see)
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
