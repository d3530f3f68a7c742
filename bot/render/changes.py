"""What changed, shown: onsets and the changes just before them, said as correlation, with a way back."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.markup import escape as escape_markup

from bot.render.common import Block, Message, SlackReply, context, escape, header, section
from commands.changes import Change, ChangesReport, Suspect

WAY_BACK_ACTION = "changes_way_back"
CORRELATION_NOTE = "Correlation in time, not a verdict: check before acting."


def _time(at: datetime | None) -> str:
    return f"{at:%H:%M:%S} UTC" if at is not None else "before the window"


def _change_line(change: Change) -> str:
    return f"{_time(change.at)} · {change.label} ({change.source})"


def way_back_value(suspect: Suspect) -> str:
    """Carry the way back's command in a button: the command and its tokens, nothing else."""
    return json.dumps({"command": suspect.change.way_back_command, "tokens": suspect.change.way_back})


def read_way_back(value: str) -> tuple[str, list[str]] | None:
    """Read a way-back button's value; None when it is not one."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        return None
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        return None
    return data["command"], tokens


def _typed(suspect: Suspect) -> str:
    return " ".join([f"/{suspect.change.way_back_command}", *suspect.change.way_back])


def changes_blocks(report: ChangesReport) -> list[Block]:
    """Build the "what changed" part of a triage reply (mrkdwn, outside text escaped)."""
    blocks: list[Block] = []
    lines = [f"• {escape(suspect.sentence())}" for suspect in report.suspects]
    onsets = [
        f"• {escape(onset.title)} crossed its {onset.level} threshold at {_time(onset.at)}"
        for onset in report.onsets
    ]
    if lines:
        blocks.append(section("*What changed just before:*\n" + "\n".join(lines)))
    elif onsets:
        blocks.append(
            section("*Onsets:*\n" + "\n".join(onsets) + "\nNo change seen in the 30 minutes before.")
        )
    if report.changes and not lines:
        recent = "\n".join(f"• {escape(_change_line(change))}" for change in report.changes[-5:])
        blocks.append(section(f"*Changes since {report.since:%H:%M} UTC:*\n{recent}"))
    notes = [CORRELATION_NOTE] if lines else []
    notes += [escape(problem) for problem in report.problems]
    if notes:
        blocks.append(context(" · ".join(notes)))
    suspect = report.way_back()
    if suspect is not None:
        blocks.append(
            {
                "type": "actions",
                "block_id": "changes_way_back",
                "elements": [
                    {
                        "type": "button",
                        "action_id": WAY_BACK_ACTION,
                        "text": {"type": "plain_text", "text": "Plan the way back"},
                        "value": way_back_value(suspect),
                    }
                ],
            }
        )
        typed = escape(_typed(suspect))
        note = f"Plans `{typed}` for an operator: Confirm, TOTP, lock; nothing runs by itself."
        blocks.append(context(note))
    return blocks


def changes_reply(report: ChangesReport) -> SlackReply:
    """Build the reply of `/triage changes`."""
    blocks: list[Block] = [header("What changed")]
    body = changes_blocks(report)
    if not report.changes and not report.onsets:
        body.insert(0, section(f"No change seen since {report.since:%H:%M} UTC."))
    elif report.changes and report.suspects:
        listed = "\n".join(f"• {escape(_change_line(change))}" for change in report.changes[-10:])
        body.append(section(f"*Every change since {report.since:%H:%M} UTC:*\n{listed}"))
    text = f"What changed since {report.since:%H:%M} UTC: {len(report.changes)} change(s)"
    return SlackReply(main=Message(text=text, blocks=blocks + body))


def changes_terminal(report: ChangesReport, console: Console) -> None:
    """Print the onsets, the suspects and the changes of the window."""
    console.print(f"[bold]What changed[/] since {report.since:%Y-%m-%d %H:%M} UTC")
    for onset in report.onsets:
        console.print(f"  onset: {escape_markup(onset.title)} crossed {onset.level} at {_time(onset.at)}")
    for suspect in report.suspects:
        console.print(f"  [bold]suspect:[/] {escape_markup(suspect.sentence())}")
    if report.suspects:
        console.print(f"  [dim]{CORRELATION_NOTE}[/]")
    way_back = report.way_back()
    if way_back is not None:
        console.print(f"  way back: {escape_markup(_typed(way_back))}")
    for change in report.changes:
        console.print(f"  {escape_markup(_change_line(change))}")
    if not report.changes:
        console.print("  no change seen in the window")
    for problem in report.problems:
        console.print(f"  [yellow]missing:[/] {escape_markup(problem)}")
