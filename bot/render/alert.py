"""Render one alert's Slack message: firing with its buttons, repeated, or resolved."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from adapters.incident_store import AlertMessage
from bot.render.common import Block, Message, context, escape, link, section
from bot.render.incident import slack_date
from commands.incident import format_minutes

TRIAGE_ACTION = "alert_triage"
DECLARE_ACTION = "alert_declare"
# Labels every alert has that say nothing about this one.
_QUIET_LABELS = frozenset({"alertname", "severity", "priority", "area"})


def alert_message(message: AlertMessage, now: datetime) -> Message:
    """Build the message: what fires, since when, how often it was notified, and what to do."""
    alert = message.alert
    labels: dict[str, str] = alert.get("labels", {})
    annotations: dict[str, str] = alert.get("annotations", {})
    firing = message.status == "firing"
    severity = labels.get("severity", "")
    emoji = ":large_green_circle:"
    if firing:
        emoji = ":red_circle:" if severity == "critical" else ":large_orange_circle:"
    state = "FIRING" if firing else "RESOLVED"
    title = f"{emoji} *{state}* · *{escape(message.alertname)}*"
    if severity:
        title += f" · {escape(severity)}"
    lines = [title]
    if annotations.get("summary"):
        lines.append(escape(annotations["summary"]))
    if annotations.get("description"):
        lines.append(f"_{escape(annotations['description'])}_")
    blocks: list[Block] = [section("\n".join(lines))]
    detail = [f"started {slack_date(message.starts_at)}"]
    if not firing and message.ends_at is not None:
        lasted = format_minutes(message.ends_at - message.starts_at)
        detail.append(f"resolved {slack_date(message.ends_at)} after {lasted}")
    if message.notifications > 1:
        detail.append(f"notified {message.notifications} times, last {now:%H:%M} UTC")
    shown = {key: value for key, value in sorted(labels.items()) if key not in _QUIET_LABELS}
    if shown:
        detail.append(" ".join(f"`{escape(key)}={escape(value)}`" for key, value in shown.items()))
    blocks.append(context(" · ".join(detail)))
    links = [
        link(str(alert.get("generatorURL", "")), "Source"),
        link(str(annotations.get("runbook_url", "")), "Runbook"),
    ]
    if message.external_url:
        matcher = quote('{alertname="' + message.alertname + '"}')
        links.append(link(f"{message.external_url.rstrip('/')}/#/alerts?filter={matcher}", "Alertmanager"))
    found = [item for item in links if item]
    if message.incident_id is not None:
        found.append(f"INC-{message.incident_id}")
    if found:
        blocks.append(context(" · ".join(found) + f" · fingerprint `{escape(message.fingerprint)}`"))
    if firing:
        buttons = [_button("Run triage", TRIAGE_ACTION, message.fingerprint)]
        if message.incident_id is None:
            buttons.append(_button("Declare incident", DECLARE_ACTION, message.fingerprint, "danger"))
        blocks.append({"type": "actions", "block_id": "alert_actions", "elements": buttons})
    # The notification text is mrkdwn too: the alert's words arrive as text, never as a ping.
    text = f"{state}: {escape(message.alertname)}" + (
        f" — {escape(annotations['summary'])}" if annotations.get("summary") else ""
    )
    return Message(text=text[:3000], blocks=blocks)


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button
