"""`/rca` in the bot: find the templates and the incident, post the preview in its thread, file it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from adapters.followup_store import FollowupStore
from adapters.incident_store import Incident, IncidentStore
from bot.config import Settings
from bot.invocation import Invocation
from bot.observability import get_logger
from bot.render.rca import preview_message
from bot.runners.backup import backup_store
from bot.runners.graph import incident_graph_links
from bot.services import Services
from bot.slack.errors import slack_error_code
from bot.slack.incident_workspace import bookmark
from bot.slack.membership import channel_access
from commands import rca
from commands.backup_store import backup_time
from commands.base import UsageError
from commands.followups import FollowupFiling
from commands.incident import check_access, is_user_id
from commands.rca import RcaResult

if TYPE_CHECKING:
    # The Slack SDK's async client brings aiohttp: the terminal, without Slack, never loads it.
    from slack_sdk.web.async_client import AsyncWebClient

log = get_logger("chatops.rca")

# Services.extra[LATEST_BACKUP] may hold `async () -> datetime | None`: the latest backup's time,
# shown in the draft's checklist. Without it the configured backup store is asked; failing that,
# the draft says "unknown".
LATEST_BACKUP = "latest_backup_at"
LatestBackup = Callable[[], Awaitable[datetime | None]]

# The checkout (or editable install): bot/runners/rca.py is two folders down from it.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def templates_dir(settings: Settings) -> Path:
    """Find the RCA templates: the setting, beside the code, the working directory, or the install."""
    candidates = [
        settings.templates_dir,
        # A checkout or an editable install: templates/ sits beside bot/.
        _PACKAGE_ROOT / "templates",
        # The Docker image copies templates/ into its working directory (/app).
        Path.cwd() / "templates",
        # A regular install puts them under the prefix (pyproject's data-files).
        Path(sys.prefix) / "share" / "chatops" / "templates",
    ]
    for candidate in candidates:
        if candidate is not None and any(candidate.glob("rca.*.md.j2")):
            return candidate
    looked = ", ".join(str(item) for item in candidates if item is not None)
    raise UsageError(f"the RCA templates were not found (looked in {looked}); set CHATOPS_TEMPLATES_DIR")


async def latest_backup_at(services: Services) -> datetime | None:
    """Return the latest complete backup's time: from Services.extra's finder, else the backup store."""
    registered = services.extra.get(LATEST_BACKUP)
    finder: LatestBackup = registered if callable(registered) else (lambda: _latest_in_store(services))
    try:
        found = await asyncio.wait_for(finder(), timeout=services.settings.dependency_timeout_seconds)
    except Exception as error:  # the draft is still useful without it: "unknown"
        log.warning("latest_backup_unknown", error=type(error).__name__)
        return None
    return found if isinstance(found, datetime) else None


async def _latest_in_store(services: Services) -> datetime | None:
    ids = await backup_store(services).ids()
    return backup_time(ids[-1]) if ids else None


async def find_incident(store: IncidentStore, incident_id: int | None, channel_id: str | None) -> Incident:
    """Return the incident asked for, else the channel's latest one."""
    if incident_id is not None:
        incident = await store.get(incident_id)
        if incident is None:
            raise UsageError(f"there is no incident INC-{incident_id}", rca.USAGE)
        return incident
    if channel_id is None:
        raise UsageError("which incident? give its number: /rca 12", rca.USAGE)
    incident = await store.latest_in(channel_id)
    if incident is None:
        raise UsageError("there is no incident in this channel; give its number: /rca 12", rca.USAGE)
    return incident


async def user_names(
    client: AsyncWebClient | None, store: IncidentStore, incident: Incident
) -> dict[str, str]:
    """Look up the names of the Slack users in an incident, for the issue (ids where unknown)."""
    people = {
        incident.commander or "",
        incident.comms_lead or "",
        incident.scribe or "",
        incident.declared_by,
    }
    people |= {event.actor or "" for event in await store.events(incident.id)}
    for followup in await FollowupStore(store.state_db).of(incident.id):
        people |= {followup.owner or "", followup.created_by}
    names: dict[str, str] = {}
    if client is None:
        return names
    for person in sorted(item for item in people if is_user_id(item)):
        try:
            answer = await client.users_info(user=person)
        except SlackApiError:
            continue
        user = answer.get("user") or {}
        profile = user.get("profile") or {}
        name = (
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
        )
        if name:
            names[person] = str(name)
    return names


async def run(services: Services, tokens: list[str], invocation: Invocation) -> RcaResult:
    """Run `/rca`: render and keep the draft, preview it in the incident's thread, or file it."""
    args = rca.parse(tokens)
    settings = services.settings
    store = IncidentStore(services.state_db)
    client = services.slack.client if services.slack is not None else None
    incident = await find_incident(
        store, args.incident_id, invocation.channel_id or settings.incident_channel
    )
    # From Slack, `/rca N` works only in INC-N's channel (or for a member of it).
    await check_access(incident, channel_access(client, invocation))
    actor = invocation.user_id or "terminal"
    if args.file and await store.draft(incident.id) is not None and args.language is None:
        # File what the preview showed; re-rendering first could file something nobody has read.
        return await file_and_show(services, client, store, incident, actor, args.force)
    names = await user_names(client, store, incident)
    stored = await rca.draft(
        store,
        incident,
        language=args.language or settings.rca_language,
        templates_dir=templates_dir(settings),
        environment=settings.environment,
        actor=actor,
        names=names,
        latest_backup_at=await latest_backup_at(services),
        graphs=await incident_graph_links(
            services,
            incident.channel_id if not args.preview_only else None,
            incident.header_ts,
            incident.started_at,
            incident.resolved_at or datetime.now(UTC),
        ),
        followups=await FollowupStore(services.state_db).of(incident.id),
    )
    if args.file:
        return await file_and_show(services, client, store, incident, actor, args.force)
    result = RcaResult(outcome="drafted", incident=incident, draft=stored, preview_only=args.preview_only)
    if args.preview_only:
        return result
    result = await show_preview(client, store, result)
    if client is not None and not result.slack_problems:
        result = await _bookmark_rca(client, store, result)
    return result


async def file_and_show(
    services: Services,
    client: AsyncWebClient | None,
    store: IncidentStore,
    incident: Incident,
    actor: str,
    force: bool = False,
) -> RcaResult:
    """File the stored draft and its follow-ups, then bring its preview and bookmark up to date."""
    filing = FollowupFiling(
        store=FollowupStore(services.state_db),
        labels=list(services.settings.followup_labels),
        names=await user_names(client, store, incident),
    )
    result = await rca.file(
        store,
        services.github,
        incident,
        environment=services.settings.environment,
        actor=actor,
        force=force,
        followups=filing,
    )
    if result.outcome != "not_filed" and client is not None:
        if result.draft.preview_ts:
            result = await show_preview(client, store, result)
        result = await _bookmark_rca(client, store, result)
    return result


async def _bookmark_rca(client: AsyncWebClient, store: IncidentStore, result: RcaResult) -> RcaResult:
    """Bookmark the RCA in the incident's own channel: its preview, then the filed issue."""
    incident = await store.get(result.incident.id) or result.incident
    if not incident.has_own_channel:
        return result
    draft, problems = result.draft, list(result.slack_problems)
    url: str | None = draft.issue_url
    title = f"RCA: GitHub issue #{draft.issue_number}" if draft.issue_url else "RCA draft"
    if url is None and draft.preview_ts and draft.preview_channel:
        try:
            answer = await client.chat_getPermalink(
                channel=draft.preview_channel, message_ts=draft.preview_ts
            )
            url = str(answer.get("permalink") or "") or None
        except SlackApiError as error:
            problems.append(f"could not bookmark the RCA draft: {slack_error_code(error)}")
    if url:
        await bookmark(client, store, incident, "rca", title, url, problems)
    return result.model_copy(update={"slack_problems": problems})


async def show_preview(client: AsyncWebClient | None, store: IncidentStore, result: RcaResult) -> RcaResult:
    """Post the preview in the incident's thread, or edit the one posted before."""
    if client is None:
        return result.model_copy(
            update={"slack_problems": ["Slack is not configured: no preview was posted"]}
        )
    incident, draft = result.incident, result.draft
    message = preview_message(result)
    channel = draft.preview_channel or incident.channel_id
    problems: list[str] = []
    if draft.preview_ts:
        try:
            await client.chat_update(
                channel=channel, ts=draft.preview_ts, text=message.text, blocks=message.blocks
            )
            return result
        except SlackApiError as error:
            if slack_error_code(error) != "message_not_found":
                problems.append(f"could not update the preview: {slack_error_code(error)}")
                return result.model_copy(update={"slack_problems": problems})
    try:
        answer = await client.chat_postMessage(
            channel=incident.channel_id,
            text=message.text,
            blocks=message.blocks,
            thread_ts=incident.header_ts,
        )
    except SlackApiError as error:
        problems.append(f"could not post the preview: {slack_error_code(error)}; the draft is kept")
        return result.model_copy(update={"slack_problems": problems})
    ts = str(answer["ts"])
    await store.update_draft(incident.id, preview_channel=incident.channel_id, preview_ts=ts)
    return result.model_copy(
        update={"draft": draft.model_copy(update={"preview_channel": incident.channel_id, "preview_ts": ts})}
    )
