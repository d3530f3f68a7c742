"""S3 objects moved in bulk (backups and restores): boto3 in worker threads, with transfer timeouts.

The platform's `StorageAdapter` answers quick questions with a short timeout; moving whole buckets
needs longer reads and a retry or two, and names the bucket on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # light: botocore's errors, not its clients

from adapters.base import DependencyError, classify
from adapters.storage import LazyClient, s3_client

_CHUNK = 1024 * 1024
# Above this size an upload goes in parts (and its ETag stops being the MD5 of the body).
_MULTIPART_THRESHOLD = 64 * 1024 * 1024
_MAX_POOL = 32


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing shows it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class Fetched:
    """What a download saw: the size and SHA-256 of the bytes, and the object's headers."""

    size: int
    sha256: str
    etag: str
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectTransfer:
    """Whole buckets of an S3-compatible service (MinIO, S3, SeaweedFS), object by object."""

    name = "object-transfer"

    def __init__(
        self,
        endpoint_url: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        timeout: float,
        attempts: int = 3,
    ) -> None:
        self.endpoint_url = endpoint_url
        # Built on first use: boto3 and its S3 model are loaded only by a command that moves objects.
        self._client = LazyClient(
            lambda: s3_client(
                endpoint_url,
                access_key_id,
                secret_access_key,
                region,
                connect_timeout=min(timeout, 5.0),
                read_timeout=timeout,
                attempts=attempts,
                max_pool_connections=_MAX_POOL,
            )
        )

    @property
    def client(self) -> Any:
        """Return the boto3 client, built on first use (nothing connects until a call)."""
        return self._client.get()

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except DependencyError:
            raise
        except ClientError as error:
            raise _client_error(error) from None
        except (BotoCoreError, OSError) as error:
            raise classify(error) from None

    # --- buckets --------------------------------------------------------------------------------

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if _code(error) in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise
        return True

    async def bucket_exists(self, bucket: str) -> bool:
        """Return whether the bucket exists."""
        return bool(await self._call(self._bucket_exists, bucket))

    def _ensure_bucket(self, bucket: str) -> bool:
        if self._bucket_exists(bucket):
            return False
        try:
            self.client.create_bucket(Bucket=bucket)
        except ClientError as error:
            if _code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        return True

    async def ensure_bucket(self, bucket: str) -> bool:
        """Create the bucket if it is missing; return True when it was created."""
        return bool(await self._call(self._ensure_bucket, bucket))

    def _list(self, bucket: str, prefix: str, delimiter: str) -> tuple[list[ObjectInfo], list[str]]:
        found: list[ObjectInfo] = []
        prefixes: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", []):
                found.append(
                    ObjectInfo(
                        key=str(item["Key"]),
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified"),
                    )
                )
            prefixes.extend(str(entry["Prefix"]) for entry in page.get("CommonPrefixes", []))
        return found, prefixes

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """List every object of the bucket (under `prefix`), page after page."""
        found, _ = await self._call(self._list, bucket, prefix, "")
        return list(found)

    async def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        """List the 'directories' right under `prefix` (keys up to the next `/`)."""
        _, prefixes = await self._call(self._list, bucket, prefix, "/")
        return list(prefixes)

    # --- objects --------------------------------------------------------------------------------

    def _download(self, bucket: str, key: str, path: Path | None) -> Fetched:
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in {"NoSuchKey", "404", "NotFound"}:
                raise DependencyError("not found", f"s3://{bucket}/{key} does not exist") from None
            raise
        digest = hashlib.sha256()
        size = 0
        body = answer["Body"]
        try:
            if path is None:
                for chunk in body.iter_chunks(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            else:
                with path.open("wb") as handle:
                    for chunk in body.iter_chunks(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
        finally:
            body.close()
        expected = int(answer.get("ContentLength", size))
        if size != expected:
            raise DependencyError("unexpected answer", f"s3://{bucket}/{key}: got {size} of {expected} bytes")
        return Fetched(
            size=size,
            sha256=digest.hexdigest(),
            etag=str(answer.get("ETag", "")).strip('"'),
            content_type=answer.get("ContentType"),
            metadata=dict(answer.get("Metadata") or {}),
        )

    async def download(self, bucket: str, key: str, path: Path) -> Fetched:
        """Stream an object into a file (synced to disk), hashing it on the way."""
        result: Fetched = await self._call(self._download, bucket, key, path)
        return result

    async def digest(self, bucket: str, key: str) -> Fetched:
        """Stream an object through SHA-256 without keeping it."""
        result: Fetched = await self._call(self._download, bucket, key, None)
        return result

    def _first_key(self, bucket: str, prefix: str) -> str | None:
        answer = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        contents = answer.get("Contents") or []
        return str(contents[0]["Key"]) if contents else None

    async def first_key(self, bucket: str, prefix: str = "") -> str | None:
        """Return the first key under `prefix` in S3's (lexicographic) order, or None; one request."""
        key: str | None = await self._call(self._first_key, bucket, prefix)
        return key

    def _get_bytes(self, bucket: str, key: str, limit: int) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        if int(answer.get("ContentLength", 0)) > limit:
            answer["Body"].close()
            raise DependencyError("unexpected answer", f"s3://{bucket}/{key} is larger than {limit} bytes")
        data: bytes = answer["Body"].read()
        return data

    async def get_bytes(self, bucket: str, key: str, limit: int) -> bytes | None:
        """Read a small object whole; None when it does not exist."""
        result: bytes | None = await self._call(self._get_bytes, bucket, key, limit)
        return result

    def _upload(
        self, bucket: str, key: str, path: Path, content_type: str | None, metadata: dict[str, str]
    ) -> None:
        extra: dict[str, Any] = {"Metadata": metadata}
        if content_type:
            extra["ContentType"] = content_type
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD, use_threads=False)
        self.client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config)

    async def upload(
        self,
        bucket: str,
        key: str,
        path: Path,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Upload a file as an object (in parts above 64 MB)."""
        await self._call(self._upload, bucket, key, path, content_type, metadata or {})

    def _put_bytes(self, bucket: str, key: str, data: bytes, content_type: str | None) -> None:
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write a small object whole."""
        await self._call(self._put_bytes, bucket, key, data, content_type)

    def _delete(self, bucket: str, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            answer = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise DependencyError(
                    "error",
                    f"{len(errors)} deletion(s) refused in {bucket}, e.g. {first.get('Key')}:"
                    f" {first.get('Code')}",
                )

    async def delete(self, bucket: str, keys: list[str]) -> None:
        """Delete objects, a thousand per request; any refusal is an error."""
        if keys:
            await self._call(self._delete, bucket, keys)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _client_error(error: ClientError) -> DependencyError:
    code = _code(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"404", "NoSuchBucket", "NoSuchKey", "NotFound"}:
        return DependencyError("not found", f"{code}: {error}"[:200])
    if status in (401, 403) or code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
        return DependencyError("auth failed", f"{code or status}: access denied")
    return classify(error)
