"""LFS objects in S3-compatible object storage, through boto3 (the ``s3`` extra).

``GITSERVER_LFS_STORE=s3://bucket/prefix`` names the bucket and the key prefix; the endpoint
(MinIO, Ceph, a cloud's S3), region and credentials are settings (``lfs_s3_*``; without
credentials boto3's own chain applies: environment, profile, instance role). An object is one
PUT of a file already verified on local disk (boto3 switches to a multipart upload for large
ones, which S3 also makes visible only once complete), so the bucket never holds a partial or
wrong object. Downloads are presigned GET URLs handed to the client, which then fetches from
the bucket directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, cast

from gitserver.config import Config
from gitserver.lfs.store import S3_SCHEME, Incoming, object_key
from gitserver.policy.errors import ConfigError

log = logging.getLogger(__name__)

NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


def parse_location(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix/"); the prefix may be empty."""
    rest = location[len(S3_SCHEME):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"GITSERVER_LFS_STORE: {location!r} names no bucket (s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


class S3Store:
    """Objects as keys ``<prefix>ab/cd/<oid>`` of one bucket."""

    def __init__(self, client: Any, bucket: str, prefix: str, tmp_dir: Path) -> None:
        self.client, self.bucket, self.prefix, self.tmp = client, bucket, prefix, tmp_dir

    @classmethod
    def from_config(cls, config: Config, location: str, tmp_dir: Path | None = None) -> S3Store:
        """The bucket ``location`` names; uploads pass through ``tmp_dir`` (``<data>/lfs/tmp``)."""
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise ConfigError("GITSERVER_LFS_STORE is s3://… but boto3 is not installed "
                              "(install gitserver's 's3' extra)") from None
        bucket, prefix = parse_location(location)
        client = boto3.client(
            "s3", endpoint_url=config.lfs_s3_endpoint_url or None,
            region_name=config.lfs_s3_region or None,
            aws_access_key_id=config.lfs_s3_access_key_id or None,
            aws_secret_access_key=config.lfs_s3_secret_access_key or None,
            config=BotoConfig(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"},
                              s3={"addressing_style": "path"} if config.lfs_s3_endpoint_url else None))
        return cls(client, bucket, prefix, tmp_dir or config.lfs_dir / "tmp")

    def key(self, oid: str) -> str:
        return self.prefix + object_key(oid)

    def exists(self, oid: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(oid))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
                return False
            raise
        return True

    def receive(self, oid: str, size: int) -> Incoming:
        return Incoming(oid, size, self.tmp)

    def finish(self, incoming: Incoming) -> None:
        try:
            path = incoming.verified()
            if not self.exists(incoming.oid):
                self.client.upload_file(str(path), self.bucket, self.key(incoming.oid))
        finally:
            incoming.discard()

    def open(self, oid: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(oid))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
                raise FileNotFoundError(oid) from None
            raise
        return cast(BinaryIO, answer["Body"])

    def download_href(self, oid: str, expires_in: int) -> str | None:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(oid)}, ExpiresIn=expires_in))
