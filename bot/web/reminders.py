"""The loop `chatops serve` runs beside the HTTP server: every so often, send the reminders that are due.

Each replica runs one; the reminders themselves are claimed in the bot's database, so a reminder is
sent once whichever replica finds it first (bot/slack/incident_reminders.py). The loop keeps no
schedule of its own: stopped and started again, it finds the same reminders due.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.observability import get_logger
from bot.services import Services
from bot.slack.incident_reminders import send_due_reminders

log = get_logger("chatops.reminders")

Clock = Callable[[], datetime]


class ReminderLoop:
    """Look for due reminders every `CHATOPS_INCIDENT_REMINDER_POLL_SECONDS`, until stopped."""

    def __init__(self, services: Services, client: AsyncWebClient, clock: Clock | None = None) -> None:
        self.services = services
        self.client = client
        self.clock = clock or (lambda: datetime.now(UTC))
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> list[int]:
        """Send the reminders due now; never raises (the next tick tries again)."""
        settings = self.services.settings
        try:
            return await send_due_reminders(
                self.services.state_db, self.client, settings.reminder_intervals, self.clock()
            )
        except Exception as error:  # the state database down: reminders wait, the bot goes on
            log.warning("reminders_skipped", error=type(error).__name__)
            return []

    def start(self) -> None:
        """Start looking, in the background."""
        if self._task is None and any(self.services.settings.reminder_intervals.values()):
            self._task = asyncio.create_task(self._run(), name="incident-reminders")

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.services.settings.incident_reminder_poll_seconds)

    async def stop(self) -> None:
        """Stop looking (a reminder being sent is cancelled; it was claimed, so it is not sent twice)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
