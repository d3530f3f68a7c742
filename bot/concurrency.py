"""Concurrency of the bot's own work: commands in flight (drained at shutdown), identical runs shared."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from bot.observability import BotMetrics

T = TypeVar("T")


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


class SingleFlight:
    """While a run for a key is in progress, later callers wait for it instead of starting another.

    Nothing is cached: a caller arriving after the run finished starts a fresh one, so a
    report is never older than the request that asked for it.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        """Join the run in progress for `key`, or start one."""
        running = self._running.get(key)
        if running is not None:
            result: T = await asyncio.shield(running)
            return result
        future: asyncio.Future[T] = asyncio.ensure_future(start())
        self._running[key] = future
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._running.pop(key, None)
            else:
                # Our caller was cancelled, not the run: clear the key when the run ends.
                future.add_done_callback(lambda _: self._running.pop(key, None))
