"""Record the steps of an execution and publish them as they change."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.observability import get_logger
from commands.destructive import Step, StepStatus

log = get_logger("chatops.progress")

Publisher = Callable[[list[Step]], Awaitable[None]]


class StepRecorder:
    """Keep every step with its timing; publish the list after each change."""

    def __init__(self, publish: Publisher) -> None:
        self.steps: list[Step] = []
        self._publish = publish
        self._started: dict[str, float] = {}

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        """Record that a step started, finished, failed or was skipped, then publish."""
        existing = next((item for item in self.steps if item.name == name), None)
        # A long step reports "running" again and again with its progress: time it from the first.
        if status == "running" and (existing is None or existing.status != "running"):
            self._started[name] = time.perf_counter()
        duration = None
        if status in ("done", "failed") and name in self._started:
            duration = round((time.perf_counter() - self._started[name]) * 1000, 1)
        restarted = status == "running" and existing is not None and existing.status != "running"
        updated = Step(
            name=name,
            status=status,
            detail=detail,
            started_at=existing.started_at if existing and not restarted else datetime.now(UTC),
            duration_ms=duration,
        )
        if existing is None:
            self.steps.append(updated)
        else:
            self.steps[self.steps.index(existing)] = updated
        try:
            await self._publish(list(self.steps))
        except Exception as error:  # a failed progress update must never stop the operation itself
            log.warning("progress_publish_failed", error=type(error).__name__)
