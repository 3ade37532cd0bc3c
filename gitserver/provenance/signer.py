"""The one thing that signs: the current key, from its file or through an ssh-agent.

Both produce raw ed25519 signatures; git's SSH signatures (:mod:`gitserver.provenance.sshsig`)
and the DSSE envelopes of the attestations are built on them. With an agent
(``GITSERVER_SIGNING_AGENT``) the private key never enters this process: the agent protocol
(draft-miller-ssh-agent, ``SSH_AGENTC_SIGN_REQUEST``) is spoken here over its Unix socket, a
few bytes each way, synchronously, so any thread of any part can sign.
"""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gitserver.config import Config
from gitserver.provenance import keys, sshsig

log = logging.getLogger(__name__)

AGENT_SIGN_REQUEST = 13
AGENT_SIGN_RESPONSE = 14
AGENT_FAILURE = 5
AGENT_TIMEOUT_SECONDS = 10.0
MAX_AGENT_REPLY = 256 * 1024


class Signer(Protocol):
    """Signs with the server's current key."""

    @property
    def blob(self) -> bytes:
        """The public key's SSH wire form."""

    def sign(self, data: bytes) -> bytes:
        """A raw ed25519 signature over ``data``."""


def fingerprint(signer: Signer) -> str:
    return sshsig.fingerprint(signer.blob)


def ssh_signature(signer: Signer, message: bytes, namespace: str = sshsig.NAMESPACE_GIT) -> str:
    """The armoured SSH signature of ``message``, as ``ssh-keygen -Y sign -n git`` makes it."""
    return sshsig.armor(signer.blob, signer.sign(sshsig.signed_data(message, namespace)), namespace)


class FileSigner:
    """A key the server made itself (``<data>/signing/ed25519-*``)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._blob = sshsig.public_blob(raw)

    @classmethod
    def load(cls, path: Path) -> FileSigner:
        try:
            private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise keys.SigningKeyError(f"cannot load signing key {path}: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise keys.SigningKeyError(f"signing key {path} is not ed25519")
        return cls(private)

    @property
    def blob(self) -> bytes:
        return self._blob

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


class AgentSigner:
    """A key held by an ssh-agent listening on ``socket_path``."""

    def __init__(self, socket_path: str, blob: bytes) -> None:
        self.socket_path = socket_path
        self._blob = blob

    @property
    def blob(self) -> bytes:
        return self._blob

    def sign(self, data: bytes) -> bytes:
        request = (bytes([AGENT_SIGN_REQUEST]) + sshsig.ssh_string(self._blob)
                   + sshsig.ssh_string(data) + struct.pack(">I", 0))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(AGENT_TIMEOUT_SECONDS)
                sock.connect(self.socket_path)
                sock.sendall(sshsig.ssh_string(request))
                reply = _read_message(sock)
        except OSError as exc:
            raise keys.SigningKeyError(f"ssh-agent at {self.socket_path}: {exc}") from exc
        if not reply or reply[0] != AGENT_SIGN_RESPONSE:
            raise keys.SigningKeyError("ssh-agent refused to sign (is GITSERVER_SIGNING_KEY loaded in it?)")
        signature, _ = sshsig.read_string(reply, 1)
        kind, offset = sshsig.read_string(signature, 0)
        raw, _ = sshsig.read_string(signature, offset)
        if kind != sshsig.KEY_TYPE.encode() or len(raw) != 64:
            raise keys.SigningKeyError("ssh-agent answered with a signature that is not ed25519")
        return raw


def _read_message(sock: socket.socket) -> bytes:
    header = _read_exact(sock, 4)
    (length,) = struct.unpack(">I", header)
    if length > MAX_AGENT_REPLY:
        raise OSError("ssh-agent reply too long")
    return _read_exact(sock, length)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("ssh-agent closed the connection")
        data += chunk
    return data


def load(signing_dir: Path, agent_socket: str = "", agent_key: str = "") -> Signer:
    """The signer of the current key. With an agent configured, its key must be the current
    one of the history (``gitserver init`` or ``signing-key rotate`` put it there)."""
    current = keys.current(keys.read_history(signing_dir))
    if current is None:
        raise keys.SigningKeyError(f"no signing key in {signing_dir}: run `gitserver init`")
    if agent_socket:
        if not agent_key:
            raise keys.SigningKeyError("GITSERVER_SIGNING_AGENT is set but GITSERVER_SIGNING_KEY is not")
        blob = sshsig.parse_openssh_line(agent_key)
        if blob != current.blob:
            raise keys.SigningKeyError("GITSERVER_SIGNING_KEY is not the current signing key: "
                                       "run `gitserver signing-key rotate`")
        return AgentSigner(agent_socket, blob)
    if current.file is None:
        raise keys.SigningKeyError("the current signing key lives in an ssh-agent: set "
                                   "GITSERVER_SIGNING_AGENT and GITSERVER_SIGNING_KEY")
    return FileSigner.load(signing_dir / current.file)


def from_config(cfg: Config) -> Signer:
    """The signer a process with configuration ``cfg`` uses (a file read and a key parse:
    cheap enough for once per push, and a rotation takes effect without a restart)."""
    return load(cfg.signing_dir, cfg.signing_agent, cfg.signing_key)
