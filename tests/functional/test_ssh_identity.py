"""Identity comes only from the signed auth step (paramiko drives the protocol by hand)."""

from __future__ import annotations

import base64
import socket
import time

import paramiko
from paramiko.common import cMSG_USERAUTH_REQUEST
from paramiko.message import Message

from tests.functional.conftest import GitServer


def test_unsigned_probe_of_another_key_does_not_become_the_identity(server: GitServer) -> None:
    tenant = server.new_tenant()
    victim = server.new_user(tenant)
    attacker = server.new_user(tenant)
    attacker_key = paramiko.Ed25519Key.from_private_key_file(str(attacker.key_path))
    # Only the public half of the victim's key is known to the attacker.
    victim_public = paramiko.Ed25519Key(data=base64.b64decode(victim.public_key.split()[1]))

    sock = socket.create_connection(("127.0.0.1", server.ssh_port), timeout=20)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=20)
        try:
            transport.auth_none("git")  # also makes paramiko request the ssh-userauth service
        except paramiko.BadAuthenticationType as exc:
            assert exc.allowed_types == ["publickey"]
        probe = Message()
        probe.add_byte(cMSG_USERAUTH_REQUEST)
        probe.add_string("git")
        probe.add_string("ssh-connection")
        probe.add_string("publickey")
        probe.add_boolean(False)  # no signature: "would you accept this key?"
        probe.add_string(victim_public.get_name())
        probe.add_string(victim_public.asbytes())
        # PK_OK shares its number (60) with keyboard-interactive's INFO_REQUEST, which paramiko
        # would reject; catch it instead, to see the server accepted the probe.
        answers: list[Message] = []
        transport.auth_handler._parse_userauth_info_request = answers.append
        transport._send_message(probe)  # paramiko has no API for a bare probe
        deadline = time.monotonic() + 20
        while not answers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert answers, "the server did not answer the probe with PK_OK"
        # paramiko's auth_publickey would request the ssh-userauth service a second time
        # (which servers refuse), so the signed request is built by hand as well.
        handler = transport.auth_handler
        del handler._parse_userauth_info_request
        algorithm = attacker_key.get_name()
        signed = Message()
        signed.add_byte(cMSG_USERAUTH_REQUEST)
        signed.add_string("git")
        signed.add_string("ssh-connection")
        signed.add_string("publickey")
        signed.add_boolean(True)
        signed.add_string(algorithm)
        signed.add_string(attacker_key.asbytes())
        blob = handler._get_session_blob(attacker_key, "ssh-connection", "git", algorithm)
        signed.add_string(attacker_key.sign_ssh_data(blob, algorithm))
        transport._send_message(signed)
        while not transport.is_authenticated() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert transport.is_authenticated()
        channel = transport.open_session(timeout=20)
        channel.invoke_shell()
        output = b""
        while chunk := channel.recv(4096):
            output += chunk
        assert channel.recv_exit_status() == 0
    finally:
        transport.close()
    text = output.decode()
    assert f"as {tenant}/{attacker.name};" in text
    assert victim.name not in text
