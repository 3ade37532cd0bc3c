"""The signing key (gitserver.provenance.keys, signer, sshsig) against the real OpenSSH and
git: our SSH signatures verify with ``ssh-keygen -Y verify`` and ``git verify-tag``, theirs
with ours; a rotated key keeps verifying what it signed in its window and nothing after; an
ssh-agent (the real one) signs without the server reading the key; the published keys are
served without a token."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from gitserver import config as config_mod
from gitserver.cmd.wiring import api_app
from gitserver.provenance import gitsign, keys, signer, sshsig
from gitserver.runtime import Runtime

MESSAGE = b"some bytes to sign\n"


def _ssh_keygen_verify(allowed: Path, signature: str, message: bytes, tmp_path: Path,
                       when: str | None = None) -> subprocess.CompletedProcess[bytes]:
    sig_file = tmp_path / "msg.sig"
    sig_file.write_text(signature)
    extra = ["-Overify-time=" + when] if when else []
    return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", keys.PRINCIPAL,
                           "-n", "git", "-s", str(sig_file), *extra], input=message, capture_output=True)


def test_our_signature_verifies_with_ssh_keygen(tmp_path: Path) -> None:
    keys.ensure_key(tmp_path / "signing")
    key = signer.load(tmp_path / "signing")
    allowed = tmp_path / "allowed"
    allowed.write_text(keys.allowed_signers(keys.read_history(tmp_path / "signing")))
    signature = signer.ssh_signature(key, MESSAGE)
    result = _ssh_keygen_verify(allowed, signature, MESSAGE, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _ssh_keygen_verify(allowed, signature, MESSAGE + b"x", tmp_path).returncode != 0


def test_ssh_keygens_signature_verifies_with_ours(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    (tmp_path / "m").write_bytes(MESSAGE)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(tmp_path / "k"), str(tmp_path / "m")],
                   check=True, capture_output=True)
    armored = (tmp_path / "m.sig").read_text()
    parsed = sshsig.verify(armored, MESSAGE)
    assert parsed.public_blob == sshsig.parse_openssh_line((tmp_path / "k.pub").read_text())
    with pytest.raises(sshsig.SignatureError):
        sshsig.verify(armored, MESSAGE + b"x")
    with pytest.raises(sshsig.SignatureError, match="namespace"):
        sshsig.verify(armored, MESSAGE, namespace="file")


def test_a_rotated_key_verifies_in_its_window_only(tmp_path: Path) -> None:
    """git passes the tag's own date to ssh-keygen: an old tag keeps verifying after the
    rotation, and a tag the old key signed with a later date does not."""
    signing_dir = tmp_path / "signing"
    keys.ensure_key(signing_dir)
    old_key = signer.load(signing_dir)
    history = keys.read_history(signing_dir)
    # Back-date the first key by a minute, so that the rotation below opens a second window.
    start = history[0].valid_after - dt.timedelta(minutes=1)
    (signing_dir / keys.HISTORY).write_text(json.dumps({"keys": [
        {**history[0].to_json(), "valid_after": start.strftime("%Y-%m-%dT%H:%M:%SZ")}]}))
    keys.rotate(signing_dir)
    history = keys.read_history(signing_dir)
    assert len(history) == 2 and history[0].valid_before == history[1].valid_after
    assert keys.current(history) == history[1]
    assert signer.load(signing_dir).blob != old_key.blob
    allowed = tmp_path / "allowed"
    allowed.write_text(keys.allowed_signers(history))
    assert 'valid-before="' in allowed.read_text().splitlines()[0]
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    author = pygit2.Signature("a", "a@example.com", 1_700_000_000, 0)
    commit = str(repo.create_commit("refs/heads/main", author, author, "m\n", repo.TreeBuilder().write(), []))

    def tag(name: str, key: signer.Signer, when: dt.datetime) -> int:
        oid = gitsign.write_signed_tag(repo, key, commit, name, gitsign.Ident("gs", "gs@localhost", when), "t\n")
        repo.references.create(f"refs/tags/{name}", pygit2.Oid(hex=oid))
        return subprocess.run(["git", "-C", repo.path, "-c", "gpg.format=ssh", "-c",
                               f"gpg.ssh.allowedSignersFile={allowed}", "verify-tag", name],
                              capture_output=True).returncode

    assert tag("old-in-window", old_key, start + dt.timedelta(seconds=30)) == 0
    assert tag("old-after-rotation", old_key, history[1].valid_after + dt.timedelta(seconds=5)) != 0
    assert tag("new", signer.load(signing_dir), history[1].valid_after) == 0


def test_rotation_in_the_same_second_is_refused(tmp_path: Path) -> None:
    keys.ensure_key(tmp_path / "s")
    with pytest.raises(keys.SigningKeyError, match="less than a second"):
        keys.rotate(tmp_path / "s")
    assert len(keys.read_history(tmp_path / "s")) == 1


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ssh-agent holding one ed25519 key: (socket path, public key line)."""
    sock = str(tmp_path / "agent.sock")
    out = subprocess.run(["ssh-agent", "-a", sock, "-s"], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ak")], check=True)
        subprocess.run(["ssh-add", "-q", str(tmp_path / "ak")], env={**os.environ, "SSH_AUTH_SOCK": sock},
                       check=True, capture_output=True)
        (tmp_path / "ak").unlink()  # from now on only the agent has it
        yield sock, (tmp_path / "ak.pub").read_text().strip()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_an_agent_key_signs_without_the_server_reading_it(tmp_path: Path, agent: tuple[str, str]) -> None:
    sock, public = agent
    signing_dir = tmp_path / "signing"
    assert keys.ensure_key(signing_dir, public)
    assert keys.read_history(signing_dir)[0].file is None
    key = signer.load(signing_dir, sock, public)
    assert isinstance(key, signer.AgentSigner)
    allowed = tmp_path / "allowed"
    allowed.write_text(keys.allowed_signers(keys.read_history(signing_dir)))
    result = _ssh_keygen_verify(allowed, signer.ssh_signature(key, MESSAGE), MESSAGE, tmp_path)
    assert result.returncode == 0, result.stderr
    # A key the agent does not hold: a clear error, not a traceback.
    other = signer.AgentSigner(sock, sshsig.public_blob(b"\1" * 32))
    with pytest.raises(keys.SigningKeyError, match="refused to sign"):
        other.sign(b"x")
    with pytest.raises(keys.SigningKeyError, match="current signing key"):
        signer.load(signing_dir, sock, sshsig.openssh_line(sshsig.public_blob(b"\1" * 32)))


def test_signing_agent_needs_both_settings_and_no_sandbox_sees_it(tmp_path: Path) -> None:
    with pytest.raises(config_mod.ConfigError, match="set both or neither"):
        config_mod.load(environ={"GITSERVER_SIGNING_AGENT": "/run/agent.sock"})
    with pytest.raises(config_mod.ConfigError, match="signing agent"):
        config_mod.load(environ={"GITSERVER_SIGNING_AGENT": "/opt/agent/sock", "GITSERVER_SIGNING_KEY": "k",
                                 "GITSERVER_SANDBOX_READ_ONLY_PATHS": "/opt/agent"})
    from gitserver.process.sandbox import Policy

    cfg = config_mod.load(environ={"GITSERVER_SIGNING_AGENT": "/opt/agent/sock", "GITSERVER_SIGNING_KEY": "k",
                                   "GITSERVER_DATA_DIR": str(tmp_path)})
    assert Path("/opt/agent") in Policy.from_config(cfg).hidden


def test_the_keys_are_published_without_a_token(tmp_path: Path) -> None:
    from falcon import testing

    cfg = config_mod.load(environ={"GITSERVER_DATA_DIR": str(tmp_path)})
    keys.ensure_key(cfg.signing_dir)
    runtime = Runtime.create(cfg)
    try:
        client = testing.TestClient(api_app(runtime))
        listed = client.simulate_get("/api/v1/signing-keys")
        assert listed.status_code == 200
        [key] = listed.json["keys"]
        assert key["public_key"].startswith("ssh-ed25519 AAAA") and key["valid_before"] is None
        assert key["fingerprint"] == sshsig.fingerprint(sshsig.parse_openssh_line(key["public_key"]))
        assert key["valid_after"].endswith("Z")
        text = client.simulate_get("/api/v1/signing-keys/allowed_signers")
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        after = dt.datetime.fromisoformat(key["valid_after"]).strftime("%Y%m%d%H%M%SZ")
        assert text.text == f'gitserver namespaces="git",valid-after="{after}" {key["public_key"]}\n'
    finally:
        runtime.dispose()
