"""Update reminders: the commander of an incident with no update for its severity's interval is nudged
in the incident's channel (CHATOPS_INCIDENT_UPDATE_REMINDERS: P1 every 30 min, P2 every 60 min).

Nothing is scheduled in memory: when a reminder is due follows from the incident's record (its last
update or declaration, its last reminder, its severity) and the settings, so a restart loses nothing.
`send_due_reminders` claims the due incidents with one conditional UPDATE (adapters/incident_store)
and nudges each: run by every replica's loop (bot/web/reminders.py), each reminder is sent once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.incident_store import IncidentStore, Severity
from adapters.postgres import PostgresAdapter
from bot.observability import get_logger
from bot.render.incident_workspace import reminder_message
from bot.slack.errors import slack_error_code
from commands.base import format_duration
from commands.incident import format_minutes

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.reminders")


async def send_due_reminders(
    state_db: PostgresAdapter,
    client: AsyncWebClient,
    intervals: Mapping[Severity, timedelta | None],
    now: datetime,
) -> list[int]:
    """Nudge the commander of every incident whose update reminder is due; return their numbers."""
    store = IncidentStore(state_db)
    sent = []
    for incident in await store.claim_due_reminders(now, intervals):
        interval = intervals.get(incident.severity)
        if interval is None:  # claimed by the query only when it has one
            continue
        quiet_since = incident.last_update_at or incident.declared_at
        message = reminder_message(incident, format_duration(interval), format_minutes(now - quiet_since))
        try:
            await client.chat_postMessage(
                channel=incident.channel_id, text=message.text, blocks=message.blocks
            )
        except SlackApiError as error:
            # Claimed all the same: the next one comes an interval later, as it would have.
            log.warning("reminder_not_posted", incident=incident.id, error=slack_error_code(error))
            continue
        sent.append(incident.id)
    return sent
