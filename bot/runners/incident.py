"""Bind /incident to the bot's own database and Slack: the record changes, then Slack shows it.

What a change looks like in Slack (the incident's own channel, its header and thread, bookmarks,
the stakeholders' announcement) is `bot/slack/incident_workspace.present`; `present_change` here
gives it the settings and the graphs of the incident's window, for the command and the buttons alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.followup_store import FollowupStore
from adapters.incident_store import Incident, IncidentStore
from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.render.incident_workspace import update_modal
from bot.services import Services
from bot.slack.errors import slack_error_code
from bot.slack.incident_workspace import Workspace, present
from bot.slack.incidents import user_checker, user_resolver
from bot.slack.membership import channel_access
from commands import incident as incident_command
from commands.base import UsageError
from commands.incident import ChannelAccess, IncidentArgs, IncidentResult

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

_READ_ONLY = frozenset({"timeline", "contacts", "stats"})


async def run(services: Services, tokens: list[str], invocation: Invocation) -> IncidentResult:
    """Run `/incident` (from Slack or the terminal) and show the change in Slack."""
    args = incident_command.parse(tokens)
    settings = services.settings
    client = services.slack.client if services.slack is not None else None
    store = IncidentStore(services.state_db)
    channel = invocation.channel_id or settings.incident_channel
    # From Slack, an incident answers only in its own channel (or to that channel's members).
    access = channel_access(client, invocation)
    if args.action == "update" and not args.text and client is not None and invocation.trigger_id:
        return await open_update_form(client, store, args, channel, access, invocation.trigger_id)
    result = await incident_command.run(
        store,
        args,
        actor=invocation.user_id or "terminal",
        channel_id=channel,
        contacts=settings.incident_contacts,
        resolve_user=user_resolver(client) if client is not None else None,
        user_exists=user_checker(client) if client is not None else None,
        access=access,
        followups=FollowupStore(services.state_db),
    )
    if result.outcome == "stats":
        # The picture is for Slack; the terminal draws it only for --png.
        if invocation.source == "cli":
            return result
        from bot.render.incident_stats import draw

        return await draw(result)
    if args.action == "declare":
        result = result.model_copy(update={"place": args.place or settings.incident_workspace})
    published = await present_change(services, client, store, result)
    if args.graph and published.outcome == "updated" and client is not None:
        published = await attach_graph(services, client, published)
    return published


async def present_change(
    services: Services, client: AsyncWebClient | None, store: IncidentStore, result: IncidentResult
) -> IncidentResult:
    """Show a change in Slack with the settings' workspace and the graphs of the incident's window."""

    def links(incident: Incident, now: datetime) -> tuple[str, str] | None:
        # The graphs' runner (pictures, the RCA's templates) loads only when a link is made.
        from bot.runners.graph import incident_graphs_link

        return incident_graphs_link(services, incident, now)

    return await present(client, store, result, Workspace.of(services.settings), links)


async def open_update_form(
    client: AsyncWebClient,
    store: IncidentStore,
    args: IncidentArgs,
    channel: str | None,
    access: ChannelAccess | None,
    trigger_id: str,
) -> IncidentResult:
    """Open the tactical update form (Conditions · Actions · Needs) of the incident asked about."""
    incident = await incident_command.open_target(store, args, channel, access)
    try:
        await client.views_open(trigger_id=trigger_id, view=update_modal(incident, channel))
    except SlackApiError as error:
        raise UsageError(
            f"the update form could not open ({slack_error_code(error)}); /incident update <text> works too",
            incident_command.USAGE,
        ) from None
    return IncidentResult(outcome="form", incident=incident, as_of=datetime.now(UTC))


async def attach_graph(services: Services, client: AsyncWebClient, result: IncidentResult) -> IncidentResult:
    """Put the current picture of the key metrics under the update, in the incident's thread."""
    incident = result.incident
    if incident is None or incident.header_ts is None:
        return result
    from bot.runners.graph import key_metrics_upload

    upload = await key_metrics_upload(services)
    try:
        await client.files_upload_v2(
            channel=incident.channel_id,
            thread_ts=incident.header_ts,
            filename=upload.filename,
            content=upload.content,
            title=upload.title,
            alt_txt=upload.alt_text or None,
        )
    except SlackApiError as error:
        problems = [*result.slack_problems, f"could not attach the graph: {slack_error_code(error)}"]
        return result.model_copy(update={"slack_problems": problems})
    return result


def required_role(tokens: list[str]) -> Role:
    """Reading an incident (timeline, contacts, stats) needs a viewer; changing it needs a responder.

    Read from the parsed arguments, as `run` reads them, so options anywhere give the same role.
    """
    return "viewer" if incident_command.parse(tokens).action in _READ_ONLY else "responder"


def slack_text(text: str) -> list[str]:
    """Keep slash-command text whole: free text has apostrophes and `=` that are not grammar."""
    text = text.strip()
    return [text] if text else []
