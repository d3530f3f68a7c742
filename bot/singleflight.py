"""Share one run of an expensive check among callers who ask for it at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


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
