"""SSH certificates, the admin side (docs/certificates.md): a tenant's trusted user CAs,
their revocations by serial or key id, and the principal records that say which user a
certificate principal is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from gitserver.admin import base
from gitserver.db import models
from gitserver.identity import certs
from gitserver.policy.errors import Conflict, InvalidInput, NotFound

MAX_TITLE = 200


def add_ca(session: Session, tenant: models.Tenant, key_text: str, title: str = "") -> models.SshCa:
    """Trust a user CA for ``tenant``: its certificates log in as the tenant's users their
    principals name."""
    key = certs.parse_ca_key(key_text)
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise InvalidInput(f"title must be a string of at most {MAX_TITLE} characters", field="title")
    conflict = f"CA {key.fingerprint} is already trusted by tenant {tenant.name}"
    if session.scalar(select(models.SshCa.id).where(models.SshCa.tenant_id == tenant.id,
                                                    models.SshCa.fingerprint == key.fingerprint)):
        raise Conflict(conflict)
    row = models.SshCa(tenant_id=tenant.id, fingerprint=key.fingerprint,
                       key_data=f"{key.key_type} {key.openssh.split()[1]}", title=title or key.comment,
                       tenant=tenant)
    return base.add(session, row, conflict)


TENANT_CAS: base.Owned[models.Tenant, models.SshCa] = base.Owned(
    models.SshCa, "tenant_id", lambda tenant, ca_id: f"SSH CA {ca_id} of tenant {tenant.name} not found")
cas_query = TENANT_CAS.query
get_ca = TENANT_CAS.get


def remove_ca(session: Session, ca: models.SshCa) -> None:
    """Stop trusting a CA: its certificates fail at the next login (and the next command of a
    connection already open). Its revocations go with it."""
    session.execute(delete(models.SshCaRevocation).where(models.SshCaRevocation.ca_id == ca.id))
    base.delete(session, ca)


# --- revocations -------------------------------------------------------------------------------

def _serial(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= certs.MAX_SERIAL:
        raise InvalidInput(f"serial must be an integer from 1 to {certs.MAX_SERIAL} (serial 0 is what "
                           "certificates without one carry; revoke those by key_id)", field="serial")
    return str(value)


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > certs.MAX_KEY_ID or "\0" in value:
        raise InvalidInput(f"key_id must be a non-empty string of at most {certs.MAX_KEY_ID} characters",
                           field="key_id")
    return value


def revoke(session: Session, ca: models.SshCa, *, serial: object = None,
           key_id: object = None) -> models.SshCaRevocation:
    """Refuse the CA's certificates with this serial, or this key id, from the next login on."""
    if (serial is None) == (key_id is None):
        raise InvalidInput("give exactly one of serial and key_id", field="serial")
    row = models.SshCaRevocation(ca_id=ca.id, serial=None if serial is None else _serial(serial),
                                 key_id=None if key_id is None else _key_id(key_id))
    what = f"serial {row.serial}" if row.serial is not None else f"key id {row.key_id!r}"
    column = models.SshCaRevocation.serial if row.serial is not None else models.SshCaRevocation.key_id
    conflict = f"{what} of CA {ca.id} is already revoked"
    if session.scalar(select(models.SshCaRevocation.id).where(
            models.SshCaRevocation.ca_id == ca.id, column == (row.serial or row.key_id))):
        raise Conflict(conflict)
    return base.add(session, row, conflict)


def revocations_query(ca: models.SshCa) -> Select[Any]:
    return select(models.SshCaRevocation).where(models.SshCaRevocation.ca_id == ca.id)


# --- principal records -------------------------------------------------------------------------

def add_principal(session: Session, user: models.User, principal: object) -> models.SshPrincipal:
    """Say that certificates naming ``principal`` are ``user``. Principals are unique site-wide
    (a site CA looks them up in every tenant), so the 409 for one taken in another tenant does
    not say whose it is."""
    name = certs.validate_principal(principal)
    taken = session.scalar(select(models.SshPrincipal).where(models.SshPrincipal.principal == name))
    if taken is not None:
        whose = (f"user {user.tenant.name}/{taken.user.name}" if taken.tenant_id == user.tenant_id
                 else "a user of another tenant")
        raise Conflict(f"principal {name!r} already names {whose}; a principal names one user site-wide")
    row = models.SshPrincipal(user_id=user.id, tenant_id=user.tenant_id, principal=name, user=user)
    return base.add(session, row, f"principal {name!r} was taken meanwhile; a principal names one user site-wide")


def principals_query(user: models.User) -> Select[Any]:
    return select(models.SshPrincipal).where(models.SshPrincipal.user_id == user.id)


def get_principal(session: Session, user: models.User, name: str) -> models.SshPrincipal:
    row = session.scalar(select(models.SshPrincipal).where(models.SshPrincipal.user_id == user.id,
                                                           models.SshPrincipal.principal == name))
    if row is None:
        raise NotFound(f"principal {name[:255]!r} of {user.tenant.name}/{user.name} not found")
    return row


def remove_principal(session: Session, row: models.SshPrincipal) -> None:
    """Certificates naming it stop logging in as the user at the next login or command."""
    base.delete(session, row)
