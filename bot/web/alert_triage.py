"""A firing alert triages itself: the findings land in the alert's thread, once per group and cool-down.

Started in the background when an alert of the configured severity is first posted: Alertmanager
gets its answer at once. Across replicas, one row per alert group decides who triages (the first
to write it); within the cool-down, a new firing of the same group is told so in its thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import AlertMessage
from bot.dispatch import CommandTimeout, execute, new_request_id
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.registry import COMMANDS
from bot.services import Services
from bot.slack.posting import ChannelPacer, ResponseUrlSpent
from bot.slack.reply import post_reply
from commands.alert import Alert
from commands.base import UsageError, format_duration
from commands.triage_grammar import MAX_WINDOW, MIN_WINDOW

log = get_logger("chatops.alert_triage")

SEVERITIES = ("info", "warning", "error", "critical")


def triage_tokens(alert: Alert | None) -> list[str]:
    """Return the triage's arguments: the window of the rule that fired (its expression's range),
    so that the findings judge what the alert judged; none (the checklist's window) otherwise."""
    window = alert.expression_window() if alert is not None else None
    if window is None or not MIN_WINDOW <= window <= MAX_WINDOW or window.total_seconds() % 1:
        return []
    return [f"window={format_duration(window)}"]


async def _no_response_url(**_: Any) -> Any:
    raise ResponseUrlSpent("an alert has no response_url")


class AlertTriage:
    """Triage alerts by themselves, in the background, once per group and cool-down."""

    def __init__(self, services: Services, client: AsyncWebClient, pacer: ChannelPacer | None = None) -> None:
        self.services = services
        self.client = client
        self.pacer = pacer or ChannelPacer()
        self._tasks: set[asyncio.Task[Any]] = set()

    def wanted(self, alert: Alert) -> bool:
        """Return whether this alert's severity asks for a triage (the setting, and anything worse).

        An alert that does not say how bad it is (no `severity` label, or one outside info, warning,
        error, critical) is triaged whenever triage is on: not knowing is no reason not to look, and
        a triage only reads, once per group. "none" turns every triage off, labelled or not.
        """
        floor = self.services.settings.alert_triage_severity.lower()
        if floor not in SEVERITIES:
            return False  # "none" (or anything else): never by itself
        severity = alert.labels.get("severity", "").lower()
        if severity not in SEVERITIES:
            return True
        return SEVERITIES.index(severity) >= SEVERITIES.index(floor)

    def start(self, group_key: str, message: AlertMessage, alert: Alert | None = None) -> None:
        """Triage in the background (the webhook's answer does not wait), over the alert's window."""
        task = asyncio.create_task(self._run(group_key, message, triage_tokens(alert)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait for triages in progress (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _claim(self, group_key: str, fingerprint: str) -> bool:
        """Take the group for this replica, unless it was triaged within the cool-down."""
        async with self.services.state_db.connection() as conn:
            won = await conn.fetchval(
                """INSERT INTO alert_triages (group_key, fingerprint) VALUES ($1, $2)
                   ON CONFLICT (group_key) DO UPDATE SET started_at = now(), fingerprint = $2
                   WHERE alert_triages.started_at < now() - make_interval(secs => $3)
                   RETURNING true""",
                group_key,
                fingerprint,
                float(self.services.settings.alert_triage_cooldown_seconds),
            )
        return bool(won)

    async def _run(self, group_key: str, message: AlertMessage, tokens: list[str]) -> None:
        thread = message.thread_ts or message.ts
        try:
            if not await self._claim(group_key, message.fingerprint):
                minutes = round(self.services.settings.alert_triage_cooldown_seconds / 60)
                await self.pacer.wait_turn(message.channel_id)
                await self.client.chat_postMessage(
                    channel=message.channel_id,
                    thread_ts=thread,
                    text=(
                        f"Not triaged again: this alert group was triaged less than {minutes} min ago"
                        " (cool-down). Run triage from the button to see it now."
                    ),
                )
                return
            spec = COMMANDS["triage"]
            invocation = Invocation(
                request_id=new_request_id(), source="slack", user_id=None, channel_id=message.channel_id
            )
            result = await execute(spec, self.services, tokens, invocation)
            await post_reply(
                self.client,
                _no_response_url,
                message.channel_id,
                spec.name,
                spec.slack(result),
                self.services,
                thread_ts=thread,
                pacer=self.pacer,
            )
        except (UsageError, CommandTimeout) as error:
            log.warning("alert_triage_not_run", group=group_key, error=str(error)[:200])
        except Exception:  # in the background: logged, never raised into the event loop
            log.exception("alert_triage_failed", group=group_key)
