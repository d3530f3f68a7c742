"""Incidents in Slack: the pinned header kept current, its thread, and the API the rest of the bot calls.

Everything the bot does for an incident goes to its header's thread and into its timeline. Other
parts of the bot use two calls:

- ``await record(state_db, channel_id, kind, text, actor)`` adds an entry to the timeline of the
  channel's open incident and returns the thread to post in (the header's ts), or None when the
  channel has no open incident. It never raises: bookkeeping must not break what the caller does.
  ``post_reply`` in bot/slack/reply.py calls it (through ``record_result``) for every result it
  posts, and ``record_terminal_result`` for every result the terminal prints.
- ``await post_in_thread(client, state_db, channel_id, kind, text, actor)`` records and posts a
  one-line message in that thread (or in the channel when no incident is open), for events that
  are not command results: MFA lock-outs, alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from adapters.incident_store import Incident, IncidentStore
from adapters.postgres import PostgresAdapter
from bot.observability import get_logger
from bot.render.common import section
from bot.render.incident import event_message, header_message
from bot.slack.errors import slack_error_code
from commands.incident import Contact, IncidentResult, UserCheck, UserResolver

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.incidents")

# Updates and resolutions are for stakeholders: they are also shown in the channel.
BROADCAST_KINDS = frozenset({"update", "resolved"})
_USER_PAGES = 10


async def record(
    state_db: PostgresAdapter,
    channel_id: str | None,
    kind: str,
    text: str,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
) -> str | None:
    """Add a timeline entry to the channel's open incident; return its thread ts, or None.

    `text` is mrkdwn whose outside words the caller escaped: the timeline shows it as it is.
    """
    if not channel_id:
        return None
    try:
        incident = await IncidentStore(state_db).record_in_open(channel_id, kind, actor, text[:3000], details)
    except Exception as error:  # the state database being down must not stop a reply
        log.warning("incident_record_failed", error=type(error).__name__, kind=kind)
        return None
    return incident.header_ts if incident is not None else None


async def thread_for(state_db: PostgresAdapter, channel_id: str | None) -> str | None:
    """Return the thread of the channel's open incident, without recording anything."""
    if not channel_id:
        return None
    try:
        incident = await IncidentStore(state_db).open_in(channel_id)
    except Exception as error:
        log.warning("incident_lookup_failed", error=type(error).__name__)
        return None
    return incident.header_ts if incident is not None else None


async def post_in_thread(
    client: AsyncWebClient,
    state_db: PostgresAdapter,
    channel_id: str,
    kind: str,
    text: str,
    actor: str | None = None,
) -> str | None:
    """Record an event in the channel's open incident and post it in its thread; return the post's ts.

    `text` is mrkdwn whose outside words the caller escaped, as for `record`.
    """
    thread_ts = await record(state_db, channel_id, kind, text, actor)
    try:
        answer = await client.chat_postMessage(
            channel=channel_id, text=text, blocks=[section(text)], thread_ts=thread_ts
        )
    except SlackApiError as error:
        log.warning("incident_post_failed", error=slack_error_code(error), kind=kind)
        return None
    return str(answer.get("ts"))


async def publish(
    client: AsyncWebClient | None, store: IncidentStore, result: IncidentResult, contacts: list[Contact]
) -> IncidentResult:
    """Show a change in Slack: the header posted and pinned or edited in place, the event in its thread."""
    incident = result.incident
    if incident is None or result.outcome in ("asked", "timeline", "contacts"):
        return result
    if client is None:
        problem = "Slack is not configured (SLACK_BOT_TOKEN), so nothing was posted"
        return result.model_copy(update={"slack_problems": [problem]})
    problems = list(result.slack_problems)
    incident = await sync_header(client, store, incident, contacts, result.as_of, problems)
    if incident.header_ts is not None and result.event is not None:
        message = event_message(incident, result.event)
        try:
            await client.chat_postMessage(
                channel=incident.channel_id,
                text=message.text,
                blocks=message.blocks,
                thread_ts=incident.header_ts,
                reply_broadcast=result.event.kind in BROADCAST_KINDS,
            )
        except SlackApiError as error:
            problems.append(f"could not post in the incident's thread: {slack_error_code(error)}")
    return result.model_copy(update={"incident": incident, "slack_problems": problems})


async def sync_header(
    client: AsyncWebClient,
    store: IncidentStore,
    incident: Incident,
    contacts: list[Contact],
    now: datetime | None = None,
    problems: list[str] | None = None,
) -> Incident:
    """Edit the header in place; post and pin it when there is none yet (or it was deleted)."""
    problems = problems if problems is not None else []
    message = header_message(incident, contacts, now or datetime.now(UTC))
    if incident.header_ts is not None:
        try:
            await client.chat_update(
                channel=incident.channel_id, ts=incident.header_ts, text=message.text, blocks=message.blocks
            )
            return incident
        except SlackApiError as error:
            if slack_error_code(error) != "message_not_found":
                problems.append(f"could not update the header: {slack_error_code(error)}")
                return incident
            problems.append("the header message was deleted; a new one was posted and pinned")
    try:
        answer = await client.chat_postMessage(
            channel=incident.channel_id, text=message.text, blocks=message.blocks
        )
    except SlackApiError as error:
        hint = (
            " (invite the bot to the channel)"
            if slack_error_code(error) in {"not_in_channel", "channel_not_found"}
            else ""
        )
        problems.append(
            f"could not post the header: {slack_error_code(error)}{hint}; the incident is recorded"
        )
        return incident
    header_ts = str(answer["ts"])
    await store.set_header(incident.id, header_ts)
    try:
        await client.pins_add(channel=incident.channel_id, timestamp=header_ts)
    except SlackApiError as error:
        if slack_error_code(error) != "already_pinned":
            problems.append(f"could not pin the header: {slack_error_code(error)}")
    return incident.model_copy(update={"header_ts": header_ts})


async def refresh_header(
    client: AsyncWebClient, store: IncidentStore, incident_id: int, contacts: list[Contact]
) -> None:
    """Bring an incident's header up to date (after a change made outside /incident)."""
    incident = await store.get(incident_id)
    if incident is not None:
        await sync_header(client, store, incident, contacts)


def user_resolver(client: AsyncWebClient) -> UserResolver:
    """Build a lookup of a typed @name to a Slack user id (users.list; none when unreadable)."""

    async def resolve(name: str) -> str | None:
        wanted = name.strip().lstrip("@").lower()
        cursor: str | None = None
        try:
            for _ in range(_USER_PAGES):
                answer = await client.users_list(limit=200, cursor=cursor)
                for member in answer.get("members") or []:
                    profile = member.get("profile") or {}
                    names = {
                        str(member.get("name") or "").lower(),
                        str(profile.get("display_name") or "").lower(),
                        str(profile.get("real_name") or member.get("real_name") or "").lower(),
                    }
                    if wanted in names and not member.get("deleted"):
                        return str(member["id"])
                cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except SlackApiError as error:
            log.warning("users_list_failed", error=slack_error_code(error))
        return None

    return resolve


def user_checker(client: AsyncWebClient) -> UserCheck:
    """Build a check that Slack knows a user id (users.info): True, False, or None when it cannot say."""

    async def exists(user_id: str) -> bool | None:
        try:
            answer = await client.users_info(user=user_id)
        except SlackApiError as error:
            code = slack_error_code(error)
            if code in ("user_not_found", "user_not_visible"):
                return False
            log.warning("users_info_failed", error=code)
            return None
        return not bool((answer.get("user") or {}).get("deleted"))

    return exists
