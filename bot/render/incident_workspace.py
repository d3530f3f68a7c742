"""Render what the incident's workspace shows beyond its header: the link where it was declared, the
stakeholders' announcement, the update reminder, the tactical update form, the resolution summary.

Outside text (titles, updates, summaries) is escaped once here; people are mentions only for user
ids; channels are links only for the ids the bot itself keeps.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from adapters.incident_store import Incident
from bot.render.common import Block, Message, clip, context, escape, section
from bot.render.incident import SEVERITY_EMOJI, person, slack_date
from commands.incident import SEVERITY_NAMES, TACTICAL_PARTS, format_minutes, incident_duration

UPDATE_VIEW = "incident_update_view"
REMIND_UPDATE_ACTION = "incident_remind_update"
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
# Slack's limits for a modal: a title of 24 characters, an input's initial value of 3000.
_MODAL_TITLE = 24
_INPUT_LIMIT = 3000


def channel_link(channel_id: str | None) -> str:
    """Link a channel the bot keeps the id of (anything else is not linked)."""
    return f"<#{channel_id}>" if channel_id and _CHANNEL_ID.fullmatch(channel_id) else "its channel"


def _title(incident: Incident) -> str:
    return f"*{incident.reference} · {incident.severity} · {escape(incident.title)}*"


def channel_link_message(incident: Incident) -> Message:
    """Tell the channel it was declared in where the incident lives now."""
    line = (
        f":rotating_light: {_title(incident)} declared by {person(incident.declared_by)}."
        f" Everything about it happens in {channel_link(incident.channel_id)}."
    )
    note = context(
        f"Commander {person(incident.commander)} · the summary is posted here when it is resolved."
    )
    return Message(
        text=f"{incident.reference} declared: {escape(incident.title)}", blocks=[section(line), note]
    )


def resolution_message(incident: Incident, now: datetime) -> Message:
    """Say, where it was declared, that the incident is resolved, how long it took, and its summary."""
    duration = format_minutes(incident_duration(incident, now))
    summary = f": {escape(incident.summary)}" if incident.summary else "."
    line = (
        f":white_check_mark: {_title(incident)} resolved after {duration}{summary}"
        f" Its timeline and RCA are in {channel_link(incident.channel_id)}."
    )
    return Message(text=f"{incident.reference} resolved after {duration}", blocks=[section(line)])


def announcement_message(incident: Incident, now: datetime) -> Message:
    """Build the stakeholders' one message about an incident, edited in place as it changes."""
    resolved = incident.status == "resolved"
    emoji = ":white_check_mark:" if resolved else SEVERITY_EMOJI[incident.severity]
    status = "Resolved" if resolved else "Open"
    if resolved and incident.resolved_at is not None:
        status += f" after {format_minutes(incident_duration(incident, now))}"
    fields = [
        f"*Status*\n{status}",
        f"*Severity*\n{incident.severity} ({SEVERITY_NAMES[incident.severity]})",
        f"*Commander*\n{person(incident.commander)}",
        f"*Communications lead*\n{person(incident.comms_lead)}",
        f"*Started*\n{slack_date(incident.started_at)}",
        f"*Incident channel*\n{channel_link(incident.channel_id)}",
    ]
    blocks: list[Block] = [
        section(f"{emoji} {_title(incident)}"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": field} for field in fields]},
    ]
    if incident.last_update and incident.last_update_at:
        when = slack_date(incident.last_update_at, "{time}")
        blocks.append(section(f"*Latest update* ({when}):\n{escape(incident.last_update)}"))
    else:
        blocks.append(section("*Latest update*: none yet."))
    if resolved and incident.summary:
        blocks.append(section(f"*Resolution*: {escape(incident.summary)}"))
    blocks.append(context(f"This message is kept up to date · last changed {slack_date(now)}"))
    text = f"{incident.reference} [{incident.severity}] {escape(incident.title)} — {status.lower()}"
    return Message(text=clip(text, 3000), blocks=blocks)


def reminder_message(incident: Incident, interval: str, since: str) -> Message:
    """Nudge the commander: no update for the severity's interval, with a button to the form."""
    who = person(incident.commander) if incident.commander else "Nobody commands it yet"
    line = (
        f":alarm_clock: {who}: {_title(incident)} has had no update for {since}"
        f" (a {incident.severity} gets one every {interval}). Post one: `/incident update`."
    )
    if not incident.commander:
        line += " Take it: `/incident commander @you`."
    button: Block = {
        "type": "actions",
        "block_id": "incident_reminder",
        "elements": [
            {
                "type": "button",
                "action_id": REMIND_UPDATE_ACTION,
                "text": {"type": "plain_text", "text": "Post an update"},
                "value": str(incident.id),
                "style": "primary",
            }
        ],
    }
    return Message(text=f"{incident.reference}: no update for {since}", blocks=[section(line), button])


def update_modal(incident: Incident, channel_id: str | None) -> dict[str, Any]:
    """Build the tactical update form: Conditions (required), Actions, Needs."""
    hints = {
        "conditions": "What is happening now: impact, who is affected, what is known",
        "actions": "What is being done, and by whom",
        "needs": "What help or decisions are needed",
    }
    blocks: list[Block] = [
        context(f"{escape(incident.reference)} · {incident.severity} · {escape(clip(incident.title, 200))}")
    ]
    for key, label in TACTICAL_PARTS:
        blocks.append(
            {
                "type": "input",
                "block_id": key,
                "optional": key != "conditions",
                "label": {"type": "plain_text", "text": label},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": True,
                    "max_length": _INPUT_LIMIT,
                    "placeholder": {"type": "plain_text", "text": hints[key]},
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": UPDATE_VIEW,
        "private_metadata": json.dumps({"incident": incident.id, "channel": channel_id}),
        "title": {"type": "plain_text", "text": clip(f"Update {incident.reference}", _MODAL_TITLE)},
        "submit": {"type": "plain_text", "text": "Post update"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }
