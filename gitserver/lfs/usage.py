"""The bytes of LFS objects a repository and a tenant hold, as the quotas count them.

An object shared by two repositories counts in both (each chose to store it, and either
alone would keep it); sums over ``lfs_objects``, one indexed query each.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gitserver.db import models


def repo_bytes(session: Session, repo_id: int) -> int:
    total = session.scalar(select(func.coalesce(func.sum(models.LfsObject.size), 0))
                           .where(models.LfsObject.repo_id == repo_id))
    return int(total or 0)


def tenant_bytes(session: Session, tenant_id: int) -> int:
    total = session.scalar(select(func.coalesce(func.sum(models.LfsObject.size), 0))
                           .join(models.Repository, models.Repository.id == models.LfsObject.repo_id)
                           .where(models.Repository.tenant_id == tenant_id))
    return int(total or 0)
