"""Track commands acknowledged and still running, so that shutdown can wait for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.observability import BotMetrics


class InFlight:
    """Count running commands; `drain` waits until none is left (or the time is up)."""

    def __init__(self, metrics: BotMetrics) -> None:
        self.metrics = metrics
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count the enclosed work as in flight."""
        self.count += 1
        self._idle.clear()
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.count -= 1
            self.metrics.in_flight.dec()
            if self.count == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait for every running command to finish; return how many were still running at the end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        return self.count
