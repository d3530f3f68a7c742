"""Render the App Home tab: open incidents, plans waiting for me, my MFA, the last /health verdict.

A plan's Confirm button is the gate's own (the same action as under the plan's message): the MFA
modal, the checks and the execution are those of the gate, wherever it is clicked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.incident_store import Incident
from bot.gate.gate import Approval
from bot.gate.mfa import MfaStatus
from bot.render.common import Block, clip, context, escape, header, section
from bot.render.gate import CONFIRM_ACTION
from bot.render.incident import SEVERITY_EMOJI, person, slack_date
from bot.render.incident_workspace import channel_link
from commands.incident import format_minutes, incident_duration

# Slack's limit for a Home tab is 100 blocks; the lists are kept well under it.
MAX_INCIDENTS = 15
MAX_PLANS = 10
VERDICT_EMOJI = {
    "healthy": ":large_green_circle:",
    "degraded": ":large_yellow_circle:",
    "down": ":red_circle:",
}


@dataclass(frozen=True)
class HealthSeen:
    """The last /health the bot ran: its verdict (or outcome), when, and for whom."""

    verdict: str
    at: datetime
    user_id: str | None = None


@dataclass
class HomeData:
    """What the Home tab of one user shows."""

    user_id: str
    now: datetime
    incidents: list[Incident] = field(default_factory=list)
    plans: list[Approval] = field(default_factory=list)
    mfa: MfaStatus | None = None
    health: HealthSeen | None = None
    # What could not be read (the state database down): said on the tab instead of the section.
    problems: list[str] = field(default_factory=list)


def incident_line(incident: Incident, now: datetime) -> str:
    """One open incident: severity, title, commander, age, last update, where it lives."""
    age = format_minutes(incident_duration(incident, now))
    if incident.last_update_at is not None:
        last = f"last update {format_minutes(now - incident.last_update_at)} ago"
    else:
        last = "no update yet"
    return (
        f"{SEVERITY_EMOJI[incident.severity]} *{incident.reference} · {incident.severity}*"
        f" {escape(clip(incident.title, 150))}\n"
        f"Commander {person(incident.commander)} · open {age} · {last} · {channel_link(incident.channel_id)}"
    )


def plan_block(approval: Approval, now: datetime) -> Block:
    """One plan waiting for this user, with the gate's Confirm button."""
    second = approval.status == "awaiting_second"
    waiting = f"second approval (asked by {person(approval.requester)})" if second else "your confirmation"
    left = max(int((approval.expires_at - now).total_seconds() // 60), 0)
    text = (
        f"*{escape(clip(approval.plan.title, 200))}*\n`/{escape(approval.command)}` · waiting for {waiting}"
        f" · expires in {left} min"
    )
    return {
        **section(text),
        "accessory": {
            "type": "button",
            "action_id": CONFIRM_ACTION,
            "text": {"type": "plain_text", "text": "Confirm"},
            "value": str(approval.id),
            "style": "primary",
        },
    }


def mfa_line(status: MfaStatus | None, now: datetime) -> str:
    """Say where this user's MFA enrollment stands."""
    if status is None:
        return ":white_circle: unknown (the bot's database did not answer)"
    if status.locked_until is not None and status.locked_until > now:
        return f":lock: locked after wrong codes until {slack_date(status.locked_until, '{time}')}"
    if status.confirmed:
        return ":white_check_mark: enrolled: you can confirm destructive plans"
    if status.enrolled:
        return ":hourglass: enrollment started, not confirmed: `/mfa confirm <code>`"
    return ":warning: not enrolled: `/mfa enroll` before you can confirm a plan"


def health_line(health: HealthSeen | None) -> str:
    """Say what the last /health found, and when."""
    if health is None:
        return ":white_circle: no /health has run yet: `/health`"
    emoji = VERDICT_EMOJI.get(health.verdict, ":white_circle:")
    who = f" for {person(health.user_id)}" if health.user_id else ""
    return f"{emoji} *{escape(health.verdict)}* {slack_date(health.at)}{who}"


def home_view(data: HomeData) -> dict[str, Any]:
    """Build the Home tab (views.publish) of one user."""
    blocks: list[Block] = [header("Incidents")]
    shown = data.incidents[:MAX_INCIDENTS]
    blocks += [section(incident_line(incident, data.now)) for incident in shown]
    if not shown:
        blocks.append(section(":large_green_circle: No open incidents."))
    if len(data.incidents) > MAX_INCIDENTS:
        blocks.append(context(f"{len(data.incidents) - MAX_INCIDENTS} more open incidents are not listed."))
    blocks += [{"type": "divider"}, header("Plans waiting for you")]
    plans = data.plans[:MAX_PLANS]
    blocks += [plan_block(approval, data.now) for approval in plans]
    if not plans:
        blocks.append(section("Nothing is waiting for your confirmation."))
    blocks += [
        {"type": "divider"},
        section(f"*Your MFA*  {mfa_line(data.mfa, data.now)}"),
        section(f"*Last /health*  {health_line(data.health)}"),
    ]
    for problem in data.problems:
        blocks.append(context(f":warning: {escape(problem)}"))
    blocks.append(context(f"As of {slack_date(data.now)} · opened again, it is brought up to date"))
    return {"type": "home", "blocks": blocks}
