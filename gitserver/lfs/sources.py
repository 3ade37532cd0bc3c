"""Whether the credential an LFS token came from still stands (gitserver.lfs.tokens).

A token names its source: the SSH key or deploy key the ``git-lfs-authenticate`` login used
(``key_id`` and its fingerprint), or the API token of the batch call that minted an action's
header (``token_id``). Removing that key or deploy key, revoking or expiring that API token
stops the token at its next use, as it stops the credential itself, instead of up to
``lfs_action_expires_seconds`` later. (Expiry of an API token, OIDC token or certificate needs
no lookup: a token never outlives it, see tokens.expiry.)
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitserver.db import models
from gitserver.db.base import utcnow
from gitserver.policy import access
from gitserver.policy.errors import Unauthenticated

_AGAIN = "; run the git-lfs command again"
KEY_GONE = "the SSH key this LFS authorization was issued for has been removed or has expired" + _AGAIN
DEPLOY_GONE = "the deploy key this LFS authorization was issued for has been removed" + _AGAIN
TOKEN_GONE = "the API token this LFS authorization was issued for has been revoked or has expired" + _AGAIN


def check(session: Session, principal: access.Principal) -> access.Principal:
    """The principal when its source credential still stands (a deploy key's write flag as
    it is now); Unauthenticated naming the credential otherwise."""
    if principal.token_id is not None:
        _check_api_token(session, principal.token_id)
    if principal.key_id is None:
        return principal
    key = session.get(models.PublicKey, principal.key_id)
    expired = key is not None and key.expires_at is not None and key.expires_at <= utcnow()
    if principal.kind == access.PrincipalKind.DEPLOY_KEY:
        deploy = session.scalar(select(models.DeployKey).where(models.DeployKey.public_key_id == principal.key_id))
        if key is None or expired or deploy is None or key.fingerprint != principal.key_fingerprint \
                or deploy.repo_id != principal.deploy_repo_id:
            raise Unauthenticated(DEPLOY_GONE)
        return dataclasses.replace(principal, deploy_write=deploy.write)
    if key is None or expired or key.fingerprint != principal.key_fingerprint or key.user_id != principal.user_id:
        raise Unauthenticated(KEY_GONE)
    return principal


def _check_api_token(session: Session, token_id: int) -> None:
    token = session.get(models.ApiToken, token_id)
    if token is None or not token.stands(utcnow()):
        raise Unauthenticated(TOKEN_GONE)

