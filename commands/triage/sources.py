"""What the checks read: the systems behind them, one triage's shared reads, and what a check saw."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from adapters.base import DependencyError
from adapters.engine import EngineAdapter
from adapters.postgres import PostgresAdapter
from adapters.prometheus import PrometheusAdapter
from adapters.redis_store import RedisAdapter
from adapters.storage import StorageAdapter
from commands.formatting import Unit
from commands.triage.models import Evidence, Status

T = TypeVar("T")


def utc_now() -> datetime:
    """Return the bot's clock."""
    return datetime.now(UTC)


@dataclass
class TriageSources:
    """The systems the checks read; a check whose source is None reports unknown."""

    prometheus: PrometheusAdapter | None
    platform_db: PostgresAdapter | None
    redis: RedisAdapter | None
    storage: StorageAdapter | None
    engine: EngineAdapter | None
    log_paths: list[str]
    backend_service: str = "backend"
    clock: Callable[[], datetime] = field(default=utc_now)


@dataclass
class Measurement:
    """What a check saw, before its thresholds judge it."""

    value: float | None
    figure: str
    unit: Unit = "count"
    detail: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    # Set when the figure alone decides (NaN, a missing bucket); None lets the thresholds judge.
    status: Status | None = None
    reason: str | None = None


class TriageRun:
    """One triage: the window, the evaluation time and the source reads that several checks share."""

    def __init__(
        self,
        sources: TriageSources,
        window: timedelta,
        at: datetime | None,
        activity_params: tuple[float, int] = (1.0, 10),
    ) -> None:
        self.sources = sources
        self.window = window
        self.at = at
        # (slower_than seconds, rows shown) for the one pg_stat_activity read the checks share.
        self.activity_params = activity_params
        self._shared: dict[Any, asyncio.Future[Any]] = {}

    @property
    def now(self) -> datetime:
        """Return the evaluation time (the bot's clock unless the caller fixed one)."""
        return self.at or self.sources.clock()

    async def shared(self, key: Any, factory: Callable[[], Awaitable[T]]) -> T:
        """Read a source once for every check that needs it; a check's timeout does not cancel it."""
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(factory())
            self._shared[key] = future
        result: T = await asyncio.shield(future)
        return result

    def close(self) -> None:
        """Cancel reads nobody waits for any more, and collect failures nobody looked at."""
        for future in self._shared.values():
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()


def need(source: T | None, name: str) -> T:
    """Return a configured source; an unconfigured one is a dependency error naming it."""
    if source is None:
        raise DependencyError("error", f"{name} is not configured")
    return source
