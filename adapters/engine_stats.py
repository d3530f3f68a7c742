"""Figures read from the engine's container stats that need no client: CPU over a container's life."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any


def lifetime_cpu(stats: Any, started_at: str | None) -> tuple[float | None, float | None]:
    """Return (age in seconds, CPU percent of one core averaged since the start) from one sample.

    The engine's cumulative CPU counter (cpu_usage.total_usage, in nanoseconds) counts from the
    container's start; its age runs from StartedAt to the sample's `read` time, both the engine's.
    """
    started = engine_timestamp(started_at)
    read = engine_timestamp((stats or {}).get("read")) or time.time()
    if started is None:
        return None, None
    age = read - started
    try:
        used = float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
    except (KeyError, TypeError, ValueError):
        return age, None
    return age, (max(0.0, used / age * 100.0) if age > 0 else None)


def engine_timestamp(text: Any) -> float | None:
    """Read the engine's RFC 3339 time (nanoseconds, `Z`); None for none or Go's zero time."""
    if not text or str(text).startswith("0001-"):
        return None
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", str(text).strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(cleaned).timestamp()
    except ValueError:
        return None
