"""The LFS pieces that need no server: ids, the batch request and decisions, the object store's
all-or-nothing upload, the signed tokens, pkt-line framing and the SSH command parser."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest

from gitserver.lfs import batch, oids, pktline, store, tokens
from gitserver.lfs.service import Target
from gitserver.lfs.tokens import UPLOAD
from gitserver.lfs.transfer import DOWNLOAD_PACKET_DATA, Answer, BrokenFraming, TransferSession, parse_oid_line
from gitserver.policy import access
from gitserver.policy.errors import InvalidInput, Unauthenticated
from gitserver.ssh.commands import LFS_AUTHENTICATE, LFS_TRANSFER, parse_lfs_command

DATA = b"hello lfs\n" * 1000
OID = hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("bad", ["", "A" * 64, "g" * 64, "a" * 63, None, 5, "../" + "a" * 61])
def test_an_oid_is_64_lower_case_hex_digits(bad: object) -> None:
    with pytest.raises(InvalidInput, match="64 lower-case hex"):
        oids.check_oid(bad)


def test_a_batch_request_is_checked_field_by_field() -> None:
    ok = batch.parse_request({"operation": "upload", "objects": [{"oid": OID, "size": 3}],
                              "ref": {"name": "refs/heads/main"}})
    assert ok.operation == "upload" and ok.objects == (batch.Pointer(OID, 3),) and ok.ref == "refs/heads/main"
    cases = [({"operation": "delete", "objects": []}, "operation"),
             ({"operation": "download", "objects": []}, "objects"),
             ({"operation": "download", "objects": [{"oid": OID, "size": -1}]}, "objects[0].size"),
             ({"operation": "download", "objects": [{"oid": OID, "size": 1}], "transfers": ["tus"]}, "transfers"),
             ({"operation": "download", "objects": [{"oid": OID, "size": 1}], "hash_algo": "sha1"}, "hash_algo"),
             ({"operation": "download", "objects": [{"oid": OID, "size": 1}], "ref": {"name": 7}}, "ref.name"),
             ({"operation": "download", "objects": [{"oid": OID, "size": 1}],
               "ref": {"name": "x" * (batch.MAX_REF_NAME + 1)}}, "ref.name")]
    for body, field in cases:
        with pytest.raises(InvalidInput) as caught:
            batch.parse_request(body)
        assert caught.value.field == field


def test_the_batch_decisions() -> None:
    held = {OID: len(DATA)}
    other = "b" * 64
    request = batch.BatchRequest("download", (batch.Pointer(OID, 1), batch.Pointer(other, 2)))
    action = {"download": batch.Action("h", {}, 60)}
    outcomes = batch.decide(request, held, lambda p: action, lambda p: None)
    assert outcomes[0].pointer.size == len(DATA) and outcomes[0].actions == action  # the real size
    assert outcomes[1].error == (404, f"object {other} not found in this repository")
    upload = batch.BatchRequest("upload", (batch.Pointer(OID, len(DATA)), batch.Pointer(other, 2)))
    outcomes = batch.decide(upload, held, lambda p: {"upload": batch.Action("u", {}, 1)}, lambda p: "too big")
    assert outcomes[0].json() == {"oid": OID, "size": len(DATA), "authenticated": True}  # already there
    assert outcomes[1].json()["error"] == {"code": 422, "message": "too big"}
    assert batch.upload_size(upload, held) == 2


def test_an_upload_is_kept_only_when_digest_and_size_match(tmp_path: Path) -> None:
    objects = store.LocalStore(tmp_path / "lfs")
    for wrong in (DATA[:-1] + b"X", DATA[:-1]):
        incoming = objects.receive(OID, len(DATA))
        incoming.write(wrong)
        with pytest.raises(store.ObjectMismatch, match="nothing was stored"):
            objects.finish(incoming)
    longer = objects.receive(OID, len(DATA))
    with pytest.raises(store.ObjectMismatch, match="more than the announced"):
        longer.write(DATA + b"!")
    longer.discard()
    assert not objects.exists(OID) and list((tmp_path / "lfs" / "tmp").iterdir()) == []
    incoming = objects.receive(OID, len(DATA))
    incoming.write(DATA)
    objects.finish(incoming)
    assert objects.path(OID) == tmp_path / "lfs" / "objects" / OID[:2] / OID[2:4] / OID
    with objects.open(OID) as fh:
        assert fh.read() == DATA
    assert list((tmp_path / "lfs" / "tmp").iterdir()) == []


def test_tokens_are_signed_bound_and_short_lived(tmp_path: Path) -> None:
    key = tokens.signing_key(tmp_path)
    assert tokens.signing_key(tmp_path) == key and (tmp_path / tokens.KEY_FILE).stat().st_mode & 0o077 == 0
    who = access.Principal(kind=access.PrincipalKind.USER, user_id=7, user_name="ann", tenant_id=3,
                           tenant_name="acme", scopes=frozenset({"read"}))
    grant = tokens.Grant(who, repo_id=11, operation="download", oid=OID, size=5)
    token = tokens.issue(key, grant, 60, now=1000)
    # The principal comes back with the token's end, so what it mints never outlives it.
    until = dt.datetime.fromtimestamp(1060, dt.UTC)
    assert tokens.verify(key, token, now=1059) == dataclasses.replace(
        grant, principal=dataclasses.replace(who, token_expires_at=until))
    with pytest.raises(Unauthenticated):
        tokens.verify(key, token, now=1060)  # expired
    # An expiring API token (or OIDC token, or certificate) caps the token's life.
    soon = dataclasses.replace(who, token_expires_at=dt.datetime.fromtimestamp(1030, dt.UTC), token_id=5)
    capped = tokens.verify(key, tokens.issue(key, dataclasses.replace(grant, principal=soon), 60, now=1000), now=1000)
    assert capped.principal.token_expires_at == dt.datetime.fromtimestamp(1030, dt.UTC)
    assert capped.principal.token_id == 5
    with pytest.raises(Unauthenticated):
        tokens.verify(b"x" * 32, token, now=1000)  # another installation's key
    version, body, mac = token.split(".")
    with pytest.raises(Unauthenticated):
        tokens.verify(key, f"{version}.{body[:-2]}AA.{mac}", now=1000)  # tampered
    assert tokens.from_header(f"RemoteAuth {token}") == token and tokens.from_header("Bearer x") is None
    assert grant.allows("download") and not grant.allows("upload")


def test_pkt_lines_round_trip() -> None:
    framed = pktline.text("version=1") + pktline.DELIM + pktline.encode(b"\x00\x01") + pktline.FLUSH
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        chunk = framed[pos:pos + n]
        pos += len(chunk)
        return chunk

    async def all_packets() -> list[tuple[str, bytes]]:
        out = []
        while True:
            try:
                p = await pktline.read_packet(read)
            except EOFError:
                return out
            out.append((p.kind, p.data))

    assert asyncio.run(all_packets()) == [("data", b"version=1\n"), ("delim", b""), ("data", b"\x00\x01"),
                                          ("flush", b"")]
    assert Answer(404, lines=["missing"]).encode() == b"000fstatus 404\n0001000cmissing\n0000"
    assert Answer(200, ["size=3"]).encode() == b"000fstatus 200\n000bsize=3\n0000"
    with pytest.raises(InvalidInput):
        parse_oid_line("nothing")


@pytest.mark.parametrize("size", [1, 511, 65516])
@pytest.mark.parametrize("length", [0, 1, 510, 511, 512, 1 << 20])
def test_frame_cuts_data_into_packets_of_one_size(size: int, length: int) -> None:
    data = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    expected = b"".join(pktline.encode(data[s:s + size]) for s in range(0, len(data), size))
    assert pktline.frame(data, size) == expected
    with pytest.raises(ValueError):
        pktline.frame(data, 65517)


def test_get_object_sends_packets_git_lfs_reads_without_growing_a_buffer() -> None:
    """git-lfs's reader allocates 512 bytes per packet and grows from there (transfer.py says
    why the size matters); the data packets must fit."""
    framed = pktline.frame(b"\0" * 5000, DOWNLOAD_PACKET_DATA)
    assert DOWNLOAD_PACKET_DATA < 512 and framed[:4] == b"%04x" % (DOWNLOAD_PACKET_DATA + 4)


@pytest.mark.parametrize(("text", "verb", "operation"), [
    ("git-lfs-authenticate '/acme/widgets.git' download", LFS_AUTHENTICATE, "download"),
    ("git-lfs-transfer acme/widgets upload", LFS_TRANSFER, "upload"),
    ("git-lfs-transfer 'acme/widgets/' download", LFS_TRANSFER, "download"),
])
def test_lfs_commands_parse(text: str, verb: str, operation: str) -> None:
    command = parse_lfs_command(text)
    assert (command.verb, command.tenant, command.repo, command.operation) == (verb, "acme", "widgets", operation)


@pytest.mark.parametrize("text", ["git-lfs-authenticate acme/widgets", "git-lfs-transfer acme/widgets lock",
                                  "git-lfs-transfer ../x/y upload", "git-lfs-authenticate a/b download; ls"])
def test_bad_lfs_commands_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_lfs_command(text)


def test_pointer_files_are_recognised() -> None:
    from gitserver.lfs.pointers import parse_pointer

    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 10000\n".encode()
    assert parse_pointer(text) == (OID, 10000)
    assert parse_pointer(text + b"ext-0-foo sha256:" + b"a" * 64 + b"\n") == (OID, 10000)
    for other in (text.replace(b"sha256:", b"sha1:"), text[:-1], b"hello\n", text.replace(b"size", b"bytes"),
                  b"\xff" + text):
        assert parse_pointer(other) is None


VERSION_1 = pktline.text("version 1")


@pytest.mark.parametrize("sent, why", [
    (VERSION_1 + b"zzzz", "not a pkt-line length"),  # mid-command: version 1 reads to its flush
    (pktline.text("batch") + pktline.text("hash-algo=sha256") + b"0002", "bad pkt-line length 2"),
    (VERSION_1 + pktline.FLUSH + b"zzzz", "not a pkt-line length"),  # where a command starts
    (pktline.text("batch") + pktline.DELIM, "the input ended inside a command"),
    (pktline.text("put-object " + OID) + b"0009ab", "the connection ended inside a pkt-line"),
])
def test_broken_framing_ends_the_transfer_session_with_one_line(
        sent: bytes, why: str, caplog: pytest.LogCaptureFixture) -> None:
    """Driven through the transfer loop itself; the service is never reached (the framing
    breaks before a command is decided), so none is given."""
    pos, written = 0, []

    async def read(n: int) -> bytes:
        nonlocal pos
        chunk = sent[pos:pos + n]
        pos += len(chunk)
        return chunk

    async def write(data: bytes) -> None:
        written.append(data)

    principal = access.Principal(access.PrincipalKind.USER, user_id=1, user_name="ann")
    target = Target(repo_id=1, tenant="acme", repo="widgets", principal=principal,
                    operation=UPLOAD, public=False)
    session = TransferSession(None, target, read, write, can_write=True)  # type: ignore[arg-type]
    with pytest.raises(BrokenFraming, match=why), caplog.at_level("WARNING"):
        asyncio.run(session.run())
    assert b"status 500" not in b"".join(written)
    [record] = [r for r in caplog.records if r.name == "gitserver.lfs.transfer"]
    assert record.levelname == "WARNING" and record.exc_info is None and why in record.getMessage()
