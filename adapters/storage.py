"""S3-compatible object storage through boto3, run in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError  # light: botocore's errors, not its clients

from adapters.base import DependencyError


def s3_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    attempts: int = 1,
    max_pool_connections: int = 10,
) -> Any:
    """Build a boto3 S3 client with path-style addressing (MinIO, SeaweedFS) and explicit timeouts.

    boto3 and the S3 service model (a tenth of a second, 20 MB) are loaded by the first client built.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        config=Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            max_pool_connections=max_pool_connections,
        ),
    )


class LazyClient:
    """A client built the first time it is asked for, once, whichever thread asks first.

    Building a boto3 client loads boto3 and its service model; boto3's default session is not safe
    to build clients from in two threads at once, hence the lock.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """Return the client, building it if this is the first call."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client


class StorageAdapter:
    """The platform's bucket in S3-compatible storage (MinIO, S3, SeaweedFS)."""

    name = "storage"

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        timeout: float,
    ) -> None:
        self.bucket = bucket
        self._client = LazyClient(
            lambda: s3_client(
                endpoint_url,
                access_key_id,
                secret_access_key,
                region,
                connect_timeout=timeout,
                read_timeout=timeout,
            )
        )

    @property
    def client(self) -> Any:
        """Return the boto3 client, built on first use (nothing connects until a call)."""
        return self._client.get()

    def _head_bucket(self) -> str:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise DependencyError("not found", f"bucket {self.bucket} does not exist") from None
            if status in (401, 403) or code in {"403", "AccessDenied", "InvalidAccessKeyId"}:
                raise DependencyError("auth failed", f"access to bucket {self.bucket} denied") from None
            raise
        return f"bucket {self.bucket} reachable"

    async def ping(self) -> str:
        """Check that the platform bucket exists and the credentials may read it."""
        return await asyncio.to_thread(self._head_bucket)

    def _usage(self, max_objects: int) -> BucketUsage:
        self._head_bucket()
        objects = size = 0
        token: str | None = None
        while True:
            page_size = min(1000, max_objects - objects)
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "MaxKeys": page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.client.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                objects += 1
                size += int(item.get("Size", 0))
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if token is None:
                return BucketUsage(self.bucket, objects, size, complete=True)
            if objects >= max_objects:
                return BucketUsage(self.bucket, objects, size, complete=False)

    async def usage(self, max_objects: int = 10_000) -> BucketUsage:
        """Check the bucket answers and add up its objects' sizes, stopping after `max_objects`."""
        return await asyncio.to_thread(self._usage, max_objects)


@dataclass(frozen=True)
class BucketUsage:
    """Objects and bytes counted in a bucket; `complete` is False when counting stopped early."""

    bucket: str
    objects: int
    bytes: int
    complete: bool
