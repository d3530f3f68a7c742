"""Render incidents: the pinned header, thread messages, answers to the caller, and the terminal."""

from __future__ import annotations

import json
import re
from datetime import datetime

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from adapters.incident_store import Incident, TimelineEvent
from bot.render.common import (
    SECTION_LIMIT,
    Block,
    Message,
    SlackReply,
    clip,
    context,
    escape,
    header,
    plain,
    section,
    split_text,
)
from bot.render.incident_stats import slack_stats, terminal_stats
from commands.incident import (
    ROLE_TITLES,
    SEVERITY_NAMES,
    TACTICAL_PARTS,
    Contact,
    IncidentResult,
    RoleName,
    format_minutes,
    incident_duration,
    is_user_id,
    who,
)

# The incident field of each role.
_ROLE_FIELDS: dict[str, str] = {"commander": "commander", "comms": "comms_lead", "scribe": "scribe"}
ASK_NOTE_ACTION = "incident_ask_note"
ASK_DECLARE_ACTION = "incident_ask_declare"
ASK_CANCEL_ACTION = "incident_ask_cancel"

SEVERITY_EMOJI = {
    "P1": ":red_circle:",
    "P2": ":large_orange_circle:",
    "P3": ":large_yellow_circle:",
    "P4": ":large_blue_circle:",
}
KIND_EMOJI = {
    "declared": ":rotating_light:",
    "update": ":loudspeaker:",
    "note": ":memo:",
    "severity": ":arrow_up_down:",
    "commander": ":bust_in_silhouette:",
    "resolved": ":white_check_mark:",
    "alert": ":bell:",
    "rca": ":page_facing_up:",
    "role": ":busts_in_silhouette:",
    "followup": ":pushpin:",
}
# Timeline entries whose text is as typed (by /incident, an alert, RCA filing): escaped when shown.
# Every other kind was recorded by `bot.slack.incidents.record` as mrkdwn the bot already escaped.
TYPED_KINDS = frozenset(
    {"declared", "update", "note", "severity", "commander", "role", "followup", "resolved", "alert", "rca"}
)
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
# Most timeline lines shown in Slack at once; the RCA draft has them all.
TIMELINE_SHOWN = 150


def slack_date(moment: datetime, style: str = "{date_short_pretty} {time}") -> str:
    """Write a time that Slack shows in each reader's own time zone (UTC as the fallback)."""
    fallback = f"{moment:%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(moment.timestamp())}^{style}|{fallback}>"


def plain_people(text: str) -> str:
    """Turn Slack mentions (<@U123|name>) into plain @names for the terminal and Markdown."""
    return _MENTION.sub(lambda match: "@" + (match.group(2) or match.group(1)), text)


def person(someone: str | None) -> str:
    """Write a person as mrkdwn: a mention for a Slack user id, anyone else (a typed name) as text."""
    return who(someone) if someone and is_user_id(someone) else escape(who(someone))


def event_text(event: TimelineEvent) -> str:
    """Write a timeline entry's text as mrkdwn: what was typed escaped, the bot's own records as they are."""
    if event.kind in ("commander", "role") and "to" in event.details:
        # Rebuilt from the ids stored with it: a typed name in the text must not become a mention.
        role: RoleName = event.details.get("role") or "commander"
        title = ROLE_TITLES.get(role, "Commander")
        return f"{title} {person(event.details.get('from'))} → {person(event.details['to'])}"
    if event.kind == "update" and isinstance(event.details.get("tactical"), dict):
        parts = event.details["tactical"]
        lines = [f"*{label}:* {escape(str(parts[key]))}" for key, label in TACTICAL_PARTS if parts.get(key)]
        return "\n".join(lines) or escape(event.text)
    if event.kind == "followup" and event.details.get("owner"):
        return f"{escape(event.text)} (owner {person(event.details['owner'])})"
    if event.kind in TYPED_KINDS:
        return escape(event.text)
    return event.text


def terminal_text(event: TimelineEvent) -> str:
    """Write a timeline entry's text for the terminal: what was typed as typed, the bot's records
    (mrkdwn: emoji codes, mentions, escaped words) as plain text."""
    if event.kind in TYPED_KINDS:
        return plain_people(event.text)
    return plain(event.text)


def contacts_line(contacts: list[Contact]) -> str:
    """Write the emergency contacts on one line."""
    return " · ".join(f"*{escape(c.role)}* ({escape(c.area)}) {escape(c.contact)}" for c in contacts)


def header_message(incident: Incident, contacts: list[Contact], now: datetime) -> Message:
    """Build the pinned header: title, severity, status, commander, started at, duration, contacts."""
    resolved = incident.status == "resolved"
    emoji = ":white_check_mark:" if resolved else SEVERITY_EMOJI[incident.severity]
    status = "Resolved" if resolved else "Open"
    duration = format_minutes(incident_duration(incident, now))
    if not resolved:
        duration += f" so far (as of {now:%H:%M} UTC)"
    fields = [
        f"*Status*\n{status}",
        f"*Severity*\n{incident.severity} ({SEVERITY_NAMES[incident.severity]})",
        f"*Commander*\n{person(incident.commander)}",
        f"*Communications lead*\n{person(incident.comms_lead)}",
        f"*Scribe*\n{person(incident.scribe)}",
        f"*Started*\n{slack_date(incident.started_at)}",
        f"*Duration*\n{duration}",
        f"*Declared by*\n{person(incident.declared_by)}",
    ]
    blocks: list[Block] = [
        header(f"{incident.reference} · {incident.severity} · {incident.title}"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": field} for field in fields]},
    ]
    if incident.last_update and incident.last_update_at:
        when = slack_date(incident.last_update_at, "{time}")
        blocks.append(section(f"*Latest update* ({when}): {escape(incident.last_update)}"))
    if resolved:
        assert incident.resolved_at is not None
        summary = f": {escape(incident.summary)}" if incident.summary else ""
        blocks.append(section(f"*Resolved* {slack_date(incident.resolved_at)}{summary}"))
    if contacts:
        blocks.append(context("Emergency contacts: " + contacts_line(contacts)))
    if incident.has_own_channel:
        blocks.append(context(f"Declared in <#{incident.declared_in}>; this channel is the incident's."))
    blocks.append(
        context(
            "Everything about this incident goes in this thread."
            " `/incident update` (the form) tells everyone · `/incident note <text>`"
            " · `/incident role comms @user` · `/incident followup <text>` · `/incident resolve`"
        )
    )
    text = f"{emoji} {incident.reference} [{incident.severity}] {escape(incident.title)} — {status.lower()}"
    return Message(text=text, blocks=blocks)


def event_message(incident: Incident, event: TimelineEvent) -> Message:
    """Build the thread message for one change of the incident."""
    emoji = KIND_EMOJI.get(event.kind, ":small_blue_diamond:")
    text = event_text(event)
    if event.kind == "update":
        line = f"{emoji} *Update on {incident.reference}* from {person(event.actor)}:\n{text}"
    elif event.kind == "note":
        line = f"{emoji} *Note* from {person(event.actor)}: {text}"
    elif event.kind == "declared":
        line = (
            f"{emoji} {incident.reference} declared by {person(event.actor)}; commander"
            f" {person(incident.commander)}. Everything the bot does for it lands in this thread."
        )
    else:
        line = f"{emoji} {text} — {person(event.actor)}"
    return Message(text=clip(f"{incident.reference}: {text}", 3000), blocks=[section(line)])


def slack(result: IncidentResult) -> SlackReply:
    """Answer the caller: a confirmation, the question about a second incident, the timeline or contacts.

    The metrics are for everyone: posted in the channel, their picture in the thread.
    """
    if result.outcome == "stats":
        return slack_stats(result)
    if result.outcome == "asked":
        return SlackReply(main=ask_message(result), ephemeral=True)
    if result.outcome == "timeline":
        return SlackReply(main=timeline_message(result), ephemeral=True)
    if result.outcome == "contacts":
        return SlackReply(main=contacts_message(result), ephemeral=True)
    return SlackReply(main=confirmation(result), ephemeral=True)


def confirmation(result: IncidentResult) -> Message:
    """Build the short answer to whoever changed the incident, naming anything Slack refused."""
    incident = result.incident
    assert incident is not None
    duration = format_minutes(incident_duration(incident, result.as_of))
    where = f" in its own channel, <#{incident.channel_id}>" if incident.has_own_channel else ""
    role_holder = getattr(incident, _ROLE_FIELDS.get(result.role or "commander", "commander"), None)
    done = {
        "declared": f"Declared {incident.reference}{where}; the header is pinned and its thread is the"
        " incident's.",
        "updated": f"Update posted in {incident.reference}'s thread and to the channel.",
        "noted": f"Noted in {incident.reference}'s timeline.",
        "severity": f"{incident.reference} is now {incident.severity}.",
        "commander": f"{incident.reference}'s commander is now {person(incident.commander)}.",
        "role": f"{incident.reference}'s {ROLE_TITLES[result.role or 'commander'].lower()} is now"
        f" {person(role_holder)}.",
        "followup": f"Follow-up added to {incident.reference}; filing the RCA (`/rca {incident.id} file`)"
        " files it as a GitHub issue.",
        "form": f"The update form of {incident.reference} is open: Conditions · Actions · Needs.",
        "resolved": f"{incident.reference} resolved after {duration}.",
    }[result.outcome]
    lines = [f":white_check_mark: {done}"]
    lines += [f":warning: {escape(problem)}" for problem in result.slack_problems]
    text = "\n".join(lines)
    return Message(text=text, blocks=[section(text)])


def ask_message(result: IncidentResult) -> Message:
    """Ask whether a second declare in a channel with an open incident is really a new incident."""
    incident = result.incident
    assert incident is not None and result.pending_title is not None
    question = (
        f":raised_hand: *{incident.reference} · {escape(incident.title)}* is already open here"
        f" ({incident.severity}, commander {person(incident.commander)},"
        f" since {slack_date(incident.started_at)})."
        f"\nIs *{escape(result.pending_title)}* the same incident?"
    )
    pending = json.dumps({"title": result.pending_title, "severity": result.pending_severity})
    note = json.dumps({"incident": incident.id, "text": result.pending_title})
    buttons: Block = {
        "type": "actions",
        "block_id": "incident_ask",
        "elements": [
            _button(f"Same: add a note to {incident.reference}", ASK_NOTE_ACTION, note, "primary"),
            _button("Different: declare a new incident", ASK_DECLARE_ACTION, pending),
            _button("Cancel", ASK_CANCEL_ACTION, str(incident.id)),
        ],
    }
    return Message(
        text=f"{incident.reference} is already open in this channel: is this the same incident?",
        blocks=[section(question), buttons],
    )


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": clip(label, 75)},
        "value": value[:2000],
    }
    if style:
        button["style"] = style
    return button


def timeline_lines(events: list[TimelineEvent]) -> list[str]:
    """Write one mrkdwn line per timeline entry: when, what, who."""
    lines = []
    for event in events:
        emoji = KIND_EMOJI.get(event.kind, ":small_blue_diamond:")
        actor = f" — {person(event.actor)}" if event.actor else ""
        lines.append(f"`{event.at:%m-%d %H:%M}` {emoji} *{escape(event.kind)}* {event_text(event)}{actor}")
    return lines


def timeline_message(result: IncidentResult) -> Message:
    """Build the timeline, in order, with who and when (UTC)."""
    incident = result.incident
    assert incident is not None
    lines = timeline_lines(result.events)
    dropped = max(len(lines) - TIMELINE_SHOWN, 0)
    if dropped:
        lines = lines[-TIMELINE_SHOWN:]
    blocks: list[Block] = [header(f"Timeline · {incident.reference} · {incident.title}")]
    if dropped:
        blocks.append(context(f"The {dropped} earliest entries are left out here; `/rca` has them all."))
    blocks += [section(chunk) for chunk in _chunks(lines)]
    blocks.append(context(f"Times in UTC · {len(result.events)} entries · status {incident.status}"))
    return Message(text=f"Timeline of {incident.reference}: {len(result.events)} entries", blocks=blocks[:50])


def contacts_message(result: IncidentResult) -> Message:
    """Build the emergency contacts, by area."""
    lines = [f"• *{escape(c.area)}*: {escape(c.role)} — {escape(c.contact)}" for c in result.contacts]
    body = "\n".join(lines) or "No emergency contacts are configured (CHATOPS_INCIDENT_CONTACTS)."
    return Message(text="Emergency contacts", blocks=[header("Emergency contacts"), section(body)])


def _chunks(lines: list[str]) -> list[str]:
    """Pack lines into section-sized texts."""
    if not lines:
        return ["(no entries)"]
    limit = SECTION_LIMIT - 10
    return split_text("\n".join(clip(line, limit) for line in lines), limit)


def terminal(result: IncidentResult, console: Console) -> None:
    """Print what happened, or the timeline, contacts or metrics, for the terminal."""
    incident = result.incident
    if result.outcome == "stats":
        terminal_stats(result, console)
        return
    if result.outcome == "contacts":
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("area", "role", "contact"):
            table.add_column(column)
        for contact in result.contacts:
            table.add_row(
                escape_markup(contact.area), escape_markup(contact.role), escape_markup(contact.contact)
            )
        console.print(table)
        return
    assert incident is not None
    title = escape_markup(incident.title)
    if result.outcome == "asked":
        console.print(
            f"[yellow]{incident.reference} ({title}) is already open in this channel;"
            " nothing was declared. Add force=yes to declare a separate incident.[/]"
        )
        return
    duration = format_minutes(incident_duration(incident, result.as_of))
    console.print(
        f"[bold]{incident.reference}[/] · {incident.severity} · {title} · {incident.status}"
        f" · commander {escape_markup(plain_people(who(incident.commander)))} · {duration}"
    )
    if result.outcome == "timeline":
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("at (UTC)", "kind", "who", "what"):
            table.add_column(column, overflow="fold")
        for event in result.events:
            table.add_row(
                f"{event.at:%Y-%m-%d %H:%M:%S}",
                event.kind,
                escape_markup(plain_people(who(event.actor))) if event.actor else "",
                escape_markup(terminal_text(event)),
            )
        console.print(table)
        return
    if result.outcome == "declared" and incident.has_own_channel and incident.channel_name:
        console.print(f"its own channel: #{escape_markup(incident.channel_name)} ({incident.channel_id})")
    if result.event is not None:
        console.print(f"[green]{result.outcome}[/]: {escape_markup(terminal_text(result.event))}")
    for problem in result.slack_problems:
        console.print(f"[yellow]Slack: {escape_markup(problem)}[/]")
