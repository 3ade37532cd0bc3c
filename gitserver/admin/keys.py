"""Users' SSH public keys: one at a time or a whole ``authorized_keys`` file, and removal
(deploy keys are public keys too, :mod:`gitserver.admin.deploy_keys`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.identity.keys import KeyLine, parse_key_lines, parse_public_key
from gitserver.policy.errors import Conflict, InvalidInput


def new_public_key(session: Session, text: str, title: str, user: models.User | None,
                    expires_at: dt.datetime | None = None) -> models.PublicKey:
    key = parse_public_key(text)
    existing = session.scalar(select(models.PublicKey).where(models.PublicKey.fingerprint == key.fingerprint))
    if existing is not None:
        owner = "a deploy key" if existing.user_id is None else "another user's key"
        if user is not None and existing.user_id == user.id:
            owner = "already one of this user's keys"
        raise Conflict(f"key {key.fingerprint} is already registered ({owner}); "
                       "one key is one identity")
    if not isinstance(title, str) or len(title) > 200:
        raise InvalidInput("title must be a string of at most 200 characters", field="title")
    row = models.PublicKey(user_id=user.id if user else None, fingerprint=key.fingerprint,
                           key_type=key.key_type, key_data=key.openssh, bits=key.bits,
                           title=title or key.comment, expires_at=expires_at)
    return base.add(session, row, f"key {key.fingerprint} is already registered")


def add_user_key(session: Session, user: models.User, text: str, title: str = "",
                 expires_at: dt.datetime | None = None) -> models.PublicKey:
    """``expires_at``: the expiry of the API token that adds the key, if it has one. A key
    must not outlive the credential that created it (a short-lived or leaked token would
    otherwise leave a permanent way in)."""
    return new_public_key(session, text, title, user, expires_at)


@dataclasses.dataclass(frozen=True)
class KeyImport:
    """What :func:`import_user_keys` did: how many keys it added, and each refused line."""

    added: int
    refused: list[KeyLine]
    total: int  # key lines in the batch (blank lines and comments are not keys)

    @property
    def imported(self) -> bool:
        return self.added > 0 or not self.refused


_FINGERPRINT_CHUNK = 500  # fingerprints per IN clause: well inside SQLite's variable limit


def import_user_keys(session: Session, user: models.User, lines: list[str],
                     skip_refused: bool = False, expires_at: dt.datetime | None = None) -> KeyImport:
    """Add every key of an ``authorized_keys`` file to ``user`` in the caller's transaction.

    A line is refused for what :func:`gitserver.identity.keys.parse_key_lines` finds, or because its key
    is registered already (one key is one identity). All or nothing: when any line is refused,
    nothing is added, unless ``skip_refused``, which adds the others. The keys go in with one
    multi-row INSERT, so 10,000 of them take well under a second (docs/performance.md).
    ``expires_at``: as for :func:`add_user_key`, the expiry of the API token that imports them.
    """
    parsed = parse_key_lines(lines)
    fingerprints = [k.key.fingerprint for k in parsed if k.key is not None and not k.refused]
    owners: dict[str, int | None] = {}
    for start in range(0, len(fingerprints), _FINGERPRINT_CHUNK):
        chunk = fingerprints[start:start + _FINGERPRINT_CHUNK]
        owners.update(session.execute(select(models.PublicKey.fingerprint, models.PublicKey.user_id)
                                      .where(models.PublicKey.fingerprint.in_(chunk))).all())
    checked = []
    for item in parsed:
        if item.key is not None and not item.refused and item.key.fingerprint in owners:
            owner = owners[item.key.fingerprint]
            whose = ("already one of this user's keys" if owner == user.id else
                     "a deploy key" if owner is None else "another user's key")
            item = KeyLine(item.line, item.key, f"key {item.key.fingerprint} is already registered ({whose})")
        checked.append(item)
    refused = [k for k in checked if k.refused]
    accepted = [k.key for k in checked if not k.refused and k.key is not None]
    if refused and not skip_refused:
        return KeyImport(added=0, refused=refused, total=len(checked))
    if accepted:
        rows = [{"user_id": user.id, "fingerprint": key.fingerprint, "key_type": key.key_type,
                 "key_data": key.openssh, "bits": key.bits, "title": key.comment, "expires_at": expires_at}
                for key in accepted]
        try:
            with session.begin_nested():
                session.execute(insert(models.PublicKey), rows)
        except IntegrityError as exc:
            raise Conflict("a key of this batch was registered by someone else meanwhile; "
                           "nothing was imported, retry") from exc
    return KeyImport(added=len(accepted), refused=refused, total=len(checked))


USER_KEYS: base.Owned[models.User, models.PublicKey] = base.Owned(
    models.PublicKey, "user_id", lambda user, key_id: f"key {key_id} of {user.tenant.name}/{user.name} not found")
user_keys_query = USER_KEYS.query
get_user_key = USER_KEYS.get


def delete_public_key(session: Session, key: models.PublicKey) -> None:
    # The audit log keeps the fingerprint of the key that pushed (Push.key_fingerprint); only
    # the link to the row goes, so removing a key never rewrites or loses audit history.
    session.execute(update(models.Push).where(models.Push.public_key_id == key.id)
                    .values(public_key_id=None))
    base.delete(session, key)


def remove_user_key(session: Session, key: models.PublicKey) -> None:
    delete_public_key(session, key)
