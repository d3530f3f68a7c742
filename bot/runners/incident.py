"""Bind /incident to the bot's own database and Slack: the record changes, then the thread shows it."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import IncidentStore
from bot.gate.authz import Role
from bot.invocation import Invocation
from bot.runners.graph import key_metrics_upload
from bot.services import Services
from bot.slack.errors import slack_error_code
from bot.slack.incidents import publish, user_resolver
from bot.slack.membership import channel_access
from commands import incident as incident_command
from commands.incident import IncidentResult

_READ_ONLY = frozenset({"timeline", "contacts"})


async def run(services: Services, tokens: list[str], invocation: Invocation) -> IncidentResult:
    """Run `/incident` (from Slack or the terminal) and publish the change to the incident's Slack thread."""
    args = incident_command.parse(tokens)
    settings = services.settings
    client = services.slack.client if services.slack is not None else None
    store = IncidentStore(services.state_db)
    result = await incident_command.run(
        store,
        args,
        actor=invocation.user_id or "terminal",
        channel_id=invocation.channel_id or settings.incident_channel,
        contacts=settings.incident_contacts,
        resolve_user=user_resolver(client) if client is not None else None,
        # From Slack, an incident answers only in its own channel (or to that channel's members).
        access=channel_access(client, invocation),
    )
    published = await publish(client, store, result, settings.incident_contacts)
    if args.graph and published.outcome == "updated" and client is not None:
        published = await attach_graph(services, client, published)
    return published


async def attach_graph(services: Services, client: AsyncWebClient, result: IncidentResult) -> IncidentResult:
    """Put the current picture of the key metrics under the update, in the incident's thread."""
    incident = result.incident
    if incident is None or incident.header_ts is None:
        return result
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
    """Reading an incident (timeline, contacts) needs a viewer; changing it needs a responder.

    Read from the parsed arguments, as `run` reads them, so options anywhere give the same role.
    """
    return "viewer" if incident_command.parse(tokens).action in _READ_ONLY else "responder"


def slack_text(text: str) -> list[str]:
    """Keep slash-command text whole: free text has apostrophes and `=` that are not grammar."""
    text = text.strip()
    return [text] if text else []
