"""The incident's workspace in Slack: its own channel, the people in it, its bookmarks, the link where
it was declared, the stakeholders' announcement, and the summary when it is resolved.

`present(client, store, result, workspace, links)` is how a change of an incident reaches Slack
(it calls `incidents.publish` for the header and the thread). On a declare, when the incident gets
a channel of its own (setting CHATOPS_INCIDENT_WORKSPACE, or `place=`), it creates
`#<prefix>-<n>-<title>` (conversations.create), moves the incident there, invites the declarer,
the commander and the responders' user group, bookmarks the runbook and the graphs of its window,
and links it where it was declared. If Slack refuses the channel (`name_taken`, `restricted_action`,
a missing scope), the answer says why and the incident stays declared where it was declared.
Nothing here archives a channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.incident_store import Incident, IncidentStore
from bot.config import Settings
from bot.observability import get_logger
from bot.render.incident_workspace import announcement_message, channel_link_message, resolution_message
from bot.slack.errors import slack_error_code
from bot.slack.incidents import publish
from commands.incident import Contact, IncidentResult, Place, channel_name, is_user_id

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.incident_workspace")

# The outcomes stakeholders hear about (the announcement is edited in place).
ANNOUNCED = frozenset({"declared", "updated", "severity", "commander", "role", "resolved"})
# The outcomes after which the graphs bookmark is brought up to date (its window grows).
REGRAPHED = frozenset({"updated", "severity", "resolved"})
# conversations.invite takes "a comma separated list of user IDs. Up to 1000 users may be listed."
# (docs.slack.dev/reference/methods/conversations.invite).
MAX_INVITES = 1000
# Why Slack would not create a channel, in words for the person declaring.
_CREATE_REFUSALS = {
    "name_taken": "a channel with that name already exists",
    "restricted_action": "this workspace does not let the bot create channels",
    "missing_scope": "the app may not create channels (scope channels:manage, groups:write if private)",
    "invalid_name_specials": "Slack refused the name",
}
# Invites that fail for one person only: the others are invited one at a time.
_PER_USER = frozenset(
    {
        "user_not_found",
        "no_user",
        "cant_invite",
        "user_is_restricted",
        "user_is_ultra_restricted",
        "user_is_bot",
    }
)

# The graphs of an incident's window to bookmark, as (title, url), from the runner's settings.
LinksFor = Callable[[Incident, datetime], tuple[str, str] | None]


@dataclass(frozen=True)
class Workspace:
    """How incidents live in Slack, from the settings."""

    place: Place = "dedicated"
    prefix: str = "inc"
    private: bool = False
    responder_group: str | None = None
    stakeholder_channel: str | None = None
    runbook_url: str | None = None
    contacts: list[Contact] = field(default_factory=list)

    @classmethod
    def of(cls, settings: Settings) -> Workspace:
        """Read it from the settings."""
        return cls(
            place=settings.incident_workspace,
            prefix=settings.incident_channel_prefix,
            private=settings.incident_channel_private,
            responder_group=settings.incident_responder_group,
            stakeholder_channel=settings.incident_stakeholder_channel,
            runbook_url=settings.runbook_url,
            contacts=settings.incident_contacts,
        )


async def present(
    client: AsyncWebClient | None,
    store: IncidentStore,
    result: IncidentResult,
    workspace: Workspace,
    links: LinksFor | None = None,
) -> IncidentResult:
    """Show a change of an incident in Slack: its channel, header and thread, bookmarks, stakeholders."""
    if (
        client is not None
        and result.outcome == "declared"
        and (result.place or workspace.place) == "dedicated"
    ):
        result = await open_channel(client, store, result, workspace)
    result = await publish(client, store, result, workspace.contacts)
    incident = result.incident
    if client is None or incident is None or result.outcome in ("asked", "timeline", "contacts", "stats"):
        return result
    problems = list(result.slack_problems)
    now = result.as_of
    if incident.has_own_channel:
        if result.outcome == "declared":
            incident = await _bookmark_all(client, store, incident, workspace, links, now, problems)
            incident = await _link_where_declared(client, store, incident, problems)
        elif result.outcome in REGRAPHED and links is not None and "graphs" in incident.bookmarks:
            graphs = links(incident, now)
            if graphs is not None:
                await bookmark(client, store, incident, "graphs", *graphs, problems)
        if result.outcome in ("commander", "role") and result.event is not None:
            newcomer = result.event.details.get("to")
            if isinstance(newcomer, str) and is_user_id(newcomer):
                await invite(client, incident.channel_id, [newcomer], problems)
        if result.outcome == "resolved":
            await _post_where_declared(client, incident, now, problems)
    if workspace.stakeholder_channel and result.outcome in ANNOUNCED:
        incident = await announce(client, store, incident, workspace.stakeholder_channel, now, problems)
    return result.model_copy(update={"incident": incident, "slack_problems": problems})


async def open_channel(
    client: AsyncWebClient, store: IncidentStore, result: IncidentResult, workspace: Workspace
) -> IncidentResult:
    """Create the incident's own channel and move it there; say why not (it stays where declared)."""
    incident = result.incident
    assert incident is not None
    problems = list(result.slack_problems)
    name = channel_name(workspace.prefix, incident.id, incident.title)
    try:
        answer = await client.conversations_create(name=name, is_private=workspace.private)
    except SlackApiError as error:
        code = slack_error_code(error)
        why = _CREATE_REFUSALS.get(code, f"Slack answered {code}")
        problems.append(
            f"could not open #{name}: {why} ({code}); {incident.reference} is declared here instead"
        )
        log.warning("incident_channel_not_created", error=code, incident=incident.id)
        return result.model_copy(update={"slack_problems": problems, "place": "in-place"})
    channel = str((answer.get("channel") or {}).get("id") or "")
    moved = await store.keep(incident.id, channel_id=channel, channel_name=name)
    people = [
        person for person in (incident.declared_by, incident.commander) if person and is_user_id(person)
    ]
    people += await group_members(client, workspace.responder_group, problems)
    await invite(client, channel, people, problems)
    return result.model_copy(update={"incident": moved, "slack_problems": problems, "place": "dedicated"})


async def group_members(client: AsyncWebClient, group: str | None, problems: list[str]) -> list[str]:
    """Return the members of the responders' user group (none when there is no group or Slack says no)."""
    if not group:
        return []
    try:
        answer = await client.usergroups_users_list(usergroup=group)
    except SlackApiError as error:
        problems.append(f"could not read the responders' group {group}: {slack_error_code(error)}")
        return []
    return [str(user) for user in answer.get("users") or []]


async def invite(client: AsyncWebClient, channel: str, people: list[str], problems: list[str]) -> None:
    """Invite people to the incident's channel; one who cannot be invited does not stop the others."""
    wanted = list(dict.fromkeys(person for person in people if is_user_id(person)))[:MAX_INVITES]
    if not wanted:
        return
    try:
        await client.conversations_invite(channel=channel, users=",".join(wanted))
        return
    except SlackApiError as error:
        code = slack_error_code(error)
        if code == "already_in_channel" and len(wanted) == 1:
            return
        if code not in _PER_USER and code != "already_in_channel":
            problems.append(f"could not invite people to the incident's channel: {code}")
            return
    refused = []
    for person in wanted:
        try:
            await client.conversations_invite(channel=channel, users=person)
        except SlackApiError as error:
            if slack_error_code(error) != "already_in_channel":
                refused.append(f"{person} ({slack_error_code(error)})")
    if refused:
        problems.append("could not invite " + ", ".join(refused))


async def bookmark(
    client: AsyncWebClient,
    store: IncidentStore,
    incident: Incident,
    kind: str,
    title: str,
    url: str,
    problems: list[str],
) -> Incident:
    """Add a bookmark to the incident's channel, or edit the one of that kind added before."""
    known = incident.bookmarks.get(kind)
    try:
        if known:
            try:
                await client.bookmarks_edit(
                    channel_id=incident.channel_id, bookmark_id=known, title=title, link=url
                )
                return incident
            except SlackApiError as error:
                if slack_error_code(error) != "not_found":
                    raise
        answer = await client.bookmarks_add(
            channel_id=incident.channel_id, title=title, type="link", link=url
        )
    except SlackApiError as error:
        problems.append(f"could not bookmark {title}: {slack_error_code(error)}")
        return incident
    found = str((answer.get("bookmark") or {}).get("id") or "")
    if found:
        await store.set_bookmark(incident.id, kind, found)
        return incident.model_copy(update={"bookmarks": {**incident.bookmarks, kind: found}})
    return incident


async def _bookmark_all(
    client: AsyncWebClient,
    store: IncidentStore,
    incident: Incident,
    workspace: Workspace,
    links: LinksFor | None,
    now: datetime,
    problems: list[str],
) -> Incident:
    if workspace.runbook_url:
        incident = await bookmark(
            client, store, incident, "runbook", "Runbook", workspace.runbook_url, problems
        )
    graphs = links(incident, now) if links is not None else None
    if graphs is not None:
        incident = await bookmark(client, store, incident, "graphs", *graphs, problems)
    return incident


async def _link_where_declared(
    client: AsyncWebClient, store: IncidentStore, incident: Incident, problems: list[str]
) -> Incident:
    message = channel_link_message(incident)
    try:
        answer = await client.chat_postMessage(
            channel=incident.declared_in, text=message.text, blocks=message.blocks
        )
    except SlackApiError as error:
        problems.append(
            f"could not link the incident's channel where it was declared: {slack_error_code(error)}"
        )
        return incident
    return await store.keep(incident.id, origin_ts=str(answer["ts"]))


async def _post_where_declared(
    client: AsyncWebClient, incident: Incident, now: datetime, problems: list[str]
) -> None:
    message = resolution_message(incident, now)
    try:
        await client.chat_postMessage(
            channel=incident.declared_in,
            text=message.text,
            blocks=message.blocks,
            thread_ts=incident.origin_ts,
            reply_broadcast=incident.origin_ts is not None,
        )
    except SlackApiError as error:
        problems.append(f"could not post the summary where it was declared: {slack_error_code(error)}")


async def announce(
    client: AsyncWebClient,
    store: IncidentStore,
    incident: Incident,
    channel: str,
    now: datetime | None = None,
    problems: list[str] | None = None,
) -> Incident:
    """Post the incident's one announcement for stakeholders, or edit it in place."""
    problems = problems if problems is not None else []
    message = announcement_message(incident, now or datetime.now(UTC))
    if incident.announcement_ts and incident.announcement_channel:
        try:
            await client.chat_update(
                channel=incident.announcement_channel,
                ts=incident.announcement_ts,
                text=message.text,
                blocks=message.blocks,
            )
            return incident
        except SlackApiError as error:
            if slack_error_code(error) != "message_not_found":
                problems.append(f"could not update the stakeholders' announcement: {slack_error_code(error)}")
                return incident
    try:
        answer = await client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
    except SlackApiError as error:
        problems.append(f"could not tell the stakeholders' channel: {slack_error_code(error)}")
        return incident
    return await store.keep(incident.id, announcement_channel=channel, announcement_ts=str(answer["ts"]))
