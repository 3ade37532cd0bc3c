"""Deploy keys: a public key bound to one repository, read-only unless ``write``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from gitserver.admin import base, keys
from gitserver.db import models


def add_deploy_key(session: Session, repo: models.Repository, text: str, title: str = "",
                   write: bool = False, expires_at: dt.datetime | None = None) -> models.DeployKey:
    """Like :func:`gitserver.admin.keys.add_user_key`, ``expires_at`` is the adding token's expiry."""
    key = keys.new_public_key(session, text, title, None, expires_at)
    deploy = models.DeployKey(repo_id=repo.id, public_key_id=key.id, write=bool(write),
                              public_key=key, repo=repo)
    session.add(deploy)
    session.flush()
    return deploy


DEPLOY_KEYS: base.Owned[models.Repository, models.DeployKey] = base.Owned(
    models.DeployKey, "repo_id", lambda repo, key_id: f"deploy key {key_id} of {repo.full_name} not found")
deploy_keys_query = DEPLOY_KEYS.query
get_deploy_key = DEPLOY_KEYS.get


def remove_deploy_key(session: Session, deploy: models.DeployKey) -> None:
    key = deploy.public_key
    base.delete(session, deploy)
    keys.delete_public_key(session, key)
