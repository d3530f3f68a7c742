"""Where the audit trail's anchors are kept, outside the bot's database: a bucket or a directory.

Anchors are named so that the newest sorts first (`<10^12 - count>.json`): finding the latest is
one listing of one key, however many anchors there are.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from adapters.base import DependencyError
from adapters.object_transfer import ObjectTransfer

_NEWEST_FIRST = 10**12
MAX_ANCHOR_BYTES = 4096


def newest_first_name(name: str) -> str:
    """Turn `000000000042.json` (a count) into a name that sorts before every smaller count."""
    count = int(name.split(".")[0])
    return f"{_NEWEST_FIRST - count:012d}.json"


class S3AnchorStore:
    """Anchors as objects under `s3://bucket/prefix/`."""

    name = "trail-anchors"

    def __init__(self, transfer: ObjectTransfer, bucket: str, prefix: str) -> None:
        self.transfer = transfer
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}"
        self._bucket_ready = False

    def _key(self, namespace: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, namespace, name) if part)

    async def put(self, namespace: str, name: str, data: bytes) -> None:
        """Write one anchor of a trail (creating the bucket the first time)."""
        if not self._bucket_ready:
            await self.transfer.ensure_bucket(self.bucket)
            self._bucket_ready = True
        key = self._key(namespace, newest_first_name(name))
        await self.transfer.put_bytes(self.bucket, key, data, "application/json")

    async def latest(self, namespace: str) -> bytes | None:
        """Return a trail's newest anchor, or None."""
        if not await self.transfer.bucket_exists(self.bucket):
            return None
        key = await self.transfer.first_key(self.bucket, self._key(namespace, "") + "/")
        if key is None:
            return None
        return await self.transfer.get_bytes(self.bucket, key, MAX_ANCHOR_BYTES)

    async def ping(self) -> str:
        """Say whether the anchor bucket answers."""
        exists = await self.transfer.bucket_exists(self.bucket)
        return f"{self.location} ({'present' if exists else 'created on the first anchor'})"


class DirAnchorStore:
    """Anchors as files in a directory (another disk, a mounted volume)."""

    name = "trail-anchors"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _put(self, namespace: str, name: str, data: bytes) -> None:
        folder = self.root / namespace
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / newest_first_name(name)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        os.replace(partial, target)

    async def put(self, namespace: str, name: str, data: bytes) -> None:
        """Write one anchor of a trail, atomically."""
        await asyncio.to_thread(self._put, namespace, name, data)

    def _latest(self, namespace: str) -> bytes | None:
        folder = self.root / namespace
        if not folder.is_dir():
            return None
        names = sorted(item for item in os.listdir(folder) if item.endswith(".json"))
        return (folder / names[0]).read_bytes() if names else None

    async def latest(self, namespace: str) -> bytes | None:
        """Return a trail's newest anchor, or None."""
        try:
            return await asyncio.to_thread(self._latest, namespace)
        except OSError as error:
            raise DependencyError("error", f"{self.root}: {error.strerror or error}") from None

    async def ping(self) -> str:
        """Say where anchors are written."""
        return self.location
