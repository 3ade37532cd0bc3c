"""Who may sign a commit: users' emails (set by admins) and their signing-only SSH keys and
GPG keys (docs/ref-rules.md). A user's login SSH keys sign too; gitserver.push.refjudge reads
all of them when a rule requires signed commits.

An email names at most one user of a tenant, and holds no character that ssh-keygen's
allowed-signers file reads as a pattern or a separator, so a registered email can never stand
for another one there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.db.refrule_models import KEY_GPG, KEY_SSH, SigningKey, UserEmail
from gitserver.identity.keys import parse_public_key
from gitserver.policy.errors import Conflict, InvalidInput, NotFound

MAX_EMAILS = 20  # api.shapes.MAX_EMAILS documents the same bound
MAX_GPG_KEY_CHARS = 64 * 1024
# local@domain, no pattern characters (* ?), no separators (, space "), no ! negation.
EMAIL_RE = re.compile(r"^[A-Za-z0-9.+_'%=~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")
PGP_PUBLIC_KEY_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
GPG_TIMEOUT = 30.0


# --- emails ----------------------------------------------------------------------------------

def validate_email(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 320 or not EMAIL_RE.match(value):
        raise InvalidInput(f"{field} must be an email address such as alice@example.org", field=field)
    return value


def emails_of(session: Session, user: models.User) -> list[str]:
    return list(session.scalars(select(UserEmail.email).where(UserEmail.user_id == user.id)
                                .order_by(UserEmail.position)))


def set_emails(session: Session, user: models.User, emails: list[Any], field: str = "emails") -> list[str]:
    """Replace the user's emails; 409 when another user of the tenant has one of them."""
    if len(emails) > MAX_EMAILS:
        raise InvalidInput(f"{field} may hold at most {MAX_EMAILS} addresses", field=field)
    checked = list(dict.fromkeys(validate_email(e, f"{field}.{i}") for i, e in enumerate(emails)))
    taken = session.scalar(select(models.User.name).join(UserEmail, UserEmail.user_id == models.User.id).where(
        UserEmail.tenant_id == user.tenant_id, UserEmail.email.in_(checked), UserEmail.user_id != user.id))
    if taken is not None:
        raise Conflict(f"an email of {field} already belongs to user {taken!r} of this tenant")
    session.execute(delete(UserEmail).where(UserEmail.user_id == user.id))
    session.add_all(UserEmail(tenant_id=user.tenant_id, user_id=user.id, email=email, position=i)
                    for i, email in enumerate(checked))
    base.flush(session, "an email is already taken in this tenant")
    return checked


# --- signing keys ----------------------------------------------------------------------------

def signing_keys_query(user: models.User, kind: str) -> Select[Any]:
    return select(SigningKey).where(SigningKey.user_id == user.id, SigningKey.kind == kind)


def get_signing_key(session: Session, user: models.User, kind: str, key_id: int) -> SigningKey:
    """The user's key ``key_id`` of ``kind``; someone else's id looks like a missing one."""
    row = session.scalar(signing_keys_query(user, kind).where(SigningKey.id == key_id))
    if row is None:
        raise NotFound(f"{kind} signing key {key_id} not found")
    return row


def add_ssh_signing_key(session: Session, user: models.User, text: object, title: str = "") -> SigningKey:
    """A signing-only SSH key: not a login key, so it may also be another account's key."""
    key = parse_public_key(text)
    return _add(session, user, KEY_SSH, key.fingerprint, f"{key.key_type} {key.openssh.split()[1]}",
                title or key.comment)


def add_gpg_key(session: Session, user: models.User, armored: object, title: str = "") -> SigningKey:
    """An armored OpenPGP public key; its primary fingerprint as gpg reads it."""
    if not isinstance(armored, str) or PGP_PUBLIC_KEY_BEGIN not in armored or len(armored) > MAX_GPG_KEY_CHARS:
        raise InvalidInput("key must be an armored OpenPGP public key (gpg --armor --export)", field="key")
    fingerprint = gpg_fingerprint(armored)
    return _add(session, user, KEY_GPG, fingerprint, armored, title)


def _add(session: Session, user: models.User, kind: str, fingerprint: str, data: str, title: str) -> SigningKey:
    if not isinstance(title, str) or len(title) > 200:
        raise InvalidInput("title must be a string of at most 200 characters", field="title")
    taken = session.scalar(select(SigningKey.id).where(
        SigningKey.tenant_id == user.tenant_id, SigningKey.kind == kind, SigningKey.fingerprint == fingerprint))
    if taken is not None:
        raise Conflict(f"{kind} key {fingerprint} is already registered in this tenant")
    row = SigningKey(tenant_id=user.tenant_id, user_id=user.id, kind=kind, fingerprint=fingerprint,
                     key_data=data, title=title)
    return base.add(session, row, f"{kind} key {fingerprint} is already registered in this tenant")


def remove_signing_key(session: Session, key: SigningKey) -> None:
    base.delete(session, key)


def gpg_fingerprint(armored: str) -> str:
    """The primary key's fingerprint of exactly one armored public key (``gpg --show-keys``);
    InvalidInput naming ``key`` otherwise, 400 also when gpg is not installed."""
    if shutil.which("gpg") is None:
        raise InvalidInput("GPG keys cannot be registered: gpg is not installed on the server", field="key")
    with tempfile.TemporaryDirectory(prefix="gitserver-gpg-") as home:
        try:
            result = subprocess.run(["gpg", "--homedir", home, "--batch", "--no-autostart", "--with-colons",
                                     "--show-keys"], input=armored.encode(), capture_output=True,
                                    timeout=GPG_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InvalidInput(f"gpg could not read the key ({type(exc).__name__})", field="key") from exc
    records = [line.split(":") for line in result.stdout.decode("utf-8", "replace").splitlines()]
    primaries = [i for i, r in enumerate(records) if r[0] == "pub"]
    if result.returncode != 0 or len(primaries) != 1:
        raise InvalidInput("key must hold exactly one OpenPGP public key", field="key")
    fingerprint = next((r[9] for r in records[primaries[0] + 1:] if r[0] == "fpr" and len(r) > 9), "")
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint):
        raise InvalidInput("gpg found no fingerprint in the key", field="key")
    return fingerprint
