"""git objects signed by the server: annotated tags and commits in git's SSH signature form.

git signs a tag by appending the armoured signature to the tag's text, and a commit by
putting it in a ``gpgsig`` header (continuation lines start with a space); in both cases what
is signed is the object without its signature. The objects are written here byte for byte so
that the signature covers exactly what git will check (``git verify-tag``, ``git
verify-commit``); libgit2's own tag writer cannot carry a signature.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pygit2

from gitserver.provenance import signer as signing
from gitserver.provenance import sshsig

GPGSIG_HEADER = "gpgsig"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
UTC_OFFSET = "+0000"


@dataclasses.dataclass(frozen=True)
class Ident:
    """A git identity line's parts (``name <email> seconds +0000``)."""

    name: str
    email: str
    when: dt.datetime

    def line(self) -> str:
        return f"{self.name} <{self.email}> {int(self.when.timestamp())} {UTC_OFFSET}"


def tag_payload(object_id: str, object_type: str, name: str, tagger: Ident, message: str) -> bytes:
    """The text of an annotated tag, before its signature."""
    if not message.endswith("\n"):
        message += "\n"
    return (f"object {object_id}\ntype {object_type}\ntag {name}\ntagger {tagger.line()}\n\n"
            f"{message}").encode()


def write_signed_tag(repo: pygit2.Repository, key: signing.Signer, object_id: str, name: str,
                     tagger: Ident, message: str) -> str:
    """Write the signed tag object (not its ref); its id."""
    payload = tag_payload(object_id, "commit", name, tagger, message)
    raw = payload + signing.ssh_signature(key, payload).encode()
    return str(repo.odb.write(pygit2.enums.ObjectType.TAG, raw))


def commit_payload(tree: str, parents: list[str], author: Ident, message: str) -> bytes:
    """The text of a commit (author = committer), before its signature."""
    lines = [f"tree {tree}", *(f"parent {p}" for p in parents),
             f"author {author.line()}", f"committer {author.line()}"]
    return ("\n".join(lines) + "\n\n" + message).encode()


def write_signed_commit(repo: pygit2.Repository, key: signing.Signer, tree: str, parents: list[str],
                        author: Ident, message: str) -> str:
    """Write the signed commit object (not a ref); its id."""
    payload = commit_payload(tree, parents, author, message)
    return str(repo.odb.write(pygit2.enums.ObjectType.COMMIT, sign_commit_payload(key, payload)))


def sign_commit_payload(key: signing.Signer, payload: bytes) -> bytes:
    """``payload`` with its ``gpgsig`` header after the committer line."""
    signature = signing.ssh_signature(key, payload).rstrip("\n").replace("\n", "\n ")
    head, sep, body = payload.partition(b"\n\n")
    return head + f"\n{GPGSIG_HEADER} {signature}".encode() + sep + body


def split_signed_commit(raw: bytes) -> tuple[bytes, str] | None:
    """A raw commit → (the payload that was signed, the armoured signature), or None when it
    carries no ``gpgsig`` header."""
    head, sep, body = raw.partition(b"\n\n")
    kept: list[bytes] = []
    signature: list[str] = []
    in_sig = False
    for line in head.split(b"\n"):
        if line.startswith(GPGSIG_HEADER.encode() + b" "):
            in_sig = True
            signature.append(line[len(GPGSIG_HEADER) + 1:].decode("ascii", "replace"))
        elif in_sig and line.startswith(b" "):
            signature.append(line[1:].decode("ascii", "replace"))
        else:
            in_sig = False
            kept.append(line)
    if not signature:
        return None
    return b"\n".join(kept) + sep + body, "\n".join(signature) + "\n"


def split_signed_tag(raw: bytes) -> tuple[bytes, str] | None:
    """A raw tag → (payload, armoured signature), or None when it is not SSH-signed."""
    marker = ("\n" + sshsig.BEGIN).encode()
    at = raw.rfind(marker)
    if at < 0:
        return None
    return raw[:at + 1], raw[at + 1:].decode("ascii", "replace")
