"""The checks of the platform's stores: Redis memory and clients, and the object storage bucket."""

from __future__ import annotations

from typing import Any

from adapters.base import DependencyError
from commands.formatting import format_bytes, format_value
from commands.triage.models import Evidence
from commands.triage.sources import Measurement, TriageRun, need
from commands.triage_checklist import RedisClientsCheck, RedisMemoryCheck, StorageCheck


async def _redis_info(run: TriageRun) -> dict[str, Any]:
    redis = need(run.sources.redis, "Redis")
    return await run.shared("redis-info", redis.info_snapshot)


async def measure_redis_memory(check: RedisMemoryCheck, run: TriageRun) -> Measurement:
    """Measure Redis memory against maxmemory (no figure to judge when unlimited)."""
    info = await _redis_info(run)
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0) or 0)
    rows = [
        [key, str(info[key])]
        for key in (
            "used_memory_human",
            "used_memory_rss_human",
            "used_memory_peak_human",
            "maxmemory_human",
            "maxmemory_policy",
            "mem_fragmentation_ratio",
            "evicted_keys",
        )
        if key in info
    ]
    evidence = [Evidence(title="INFO memory", columns=["field", "value"], rows=rows)]
    if not limit:
        return Measurement(
            None, f"{format_bytes(used)} used, no maxmemory (unlimited)", "bytes", evidence=evidence
        )
    share = used / limit
    return Measurement(
        share,
        f"{format_bytes(used)} of {format_bytes(limit)} ({format_value(share, 'percent')})",
        "percent",
        f"policy {info.get('maxmemory_policy', '?')}",
        evidence,
    )


async def measure_redis_clients(check: RedisClientsCheck, run: TriageRun) -> Measurement:
    """Measure Redis connected clients against maxclients."""
    info = await _redis_info(run)
    clients = int(info.get("connected_clients", 0))
    limit = int(info.get("maxclients", 0) or 0)
    rows = [
        [key, str(info[key])]
        for key in ("connected_clients", "maxclients", "blocked_clients", "rejected_connections")
        if key in info
    ]
    evidence = [Evidence(title="INFO clients", columns=["field", "value"], rows=rows)]
    share = clients / limit if limit else None
    figure = f"{clients} of {limit}" if limit else f"{clients} connected"
    blocked = int(info.get("blocked_clients", 0))
    detail = f"{blocked} blocked" if blocked else ""
    return Measurement(share, figure, "percent", detail, evidence)


async def measure_storage(check: StorageCheck, run: TriageRun) -> Measurement:
    """Count the bucket's objects and bytes; a missing bucket is critical, not unknown."""
    storage = need(run.sources.storage, "object storage")
    try:
        usage = await storage.usage(check.max_objects)
    except DependencyError as error:
        if error.reason == "not found":
            # The storage answered: the platform's bucket is gone. That is a finding, not a blind spot.
            return Measurement(None, "bucket missing", status="critical", reason=error.detail)
        raise
    counted = f"{usage.objects} objects, {format_bytes(usage.bytes)}"
    if not usage.complete:
        counted = f"at least {counted} (counted the first {check.max_objects})"
    evidence = [
        Evidence(
            title=f"Bucket {usage.bucket}",
            columns=["objects", "bytes", "complete"],
            rows=[[str(usage.objects), format_bytes(usage.bytes), "yes" if usage.complete else "no"]],
        )
    ]
    if check.capacity_bytes:
        share = usage.bytes / check.capacity_bytes
        return Measurement(
            share, f"{counted} of {format_bytes(check.capacity_bytes)}", "percent", "reachable", evidence
        )
    return Measurement(None, counted, "bytes", f"bucket {usage.bucket} reachable", evidence)
