"""Render a health report for Slack and for a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from bot.render.common import (
    STATUS_EMOJI,
    STATUS_STYLE,
    Block,
    Message,
    SlackReply,
    context,
    escape,
    header,
    section,
)
from commands.health import Check, HealthReport


def _status_word(check: Check) -> str:
    return "ok" if check.status == "ok" else f"down ({check.reason})"


def summary_text(report: HealthReport) -> str:
    """Write the one-line fallback text (notifications, screen readers), as mrkdwn."""
    down = [escape(check.name) for check in report.checks if check.status == "down"]
    text = f"Health: {report.verdict}"
    if down:
        text += " — down: " + ", ".join(down)
    return text


def blocks(report: HealthReport) -> list[Block]:
    """Build the Block Kit message: verdict, one line per dependency, timings."""
    result: list[Block] = [header(f"Health: {report.verdict.upper()}")]
    for group, title in (("platform", "Platform"), ("bot", "Bot")):
        lines = []
        for check in (item for item in report.checks if item.group == group):
            emoji = STATUS_EMOJI[check.status]
            timing = f"{check.latency_ms:.0f} ms"
            lines.append(
                f"{emoji} *{escape(check.name)}* {_status_word(check)} · {timing} — {escape(check.detail)}"
            )
        if lines:
            result.append(section(f"*{title}*\n" + "\n".join(lines)))
    result.append(
        context(
            f"{STATUS_EMOJI[report.verdict]} checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC"
            f" in {report.duration_ms:.0f} ms · timeout {report.timeout_seconds:g} s per check"
        )
    )
    return result


def slack(report: HealthReport) -> SlackReply:
    """Build the Slack reply: one message in the channel."""
    return SlackReply(main=Message(text=summary_text(report), blocks=blocks(report)))


def terminal(report: HealthReport, console: Console) -> None:
    """Print the report as a table with the verdict above it."""
    style = STATUS_STYLE[report.verdict]
    console.print(f"[bold {style}]Health: {report.verdict.upper()}[/]")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("group", "component", "status", "latency", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        colour = STATUS_STYLE[check.status]
        table.add_row(
            check.group,
            check.name,
            f"[{colour}]{_status_word(check)}[/]",
            f"{check.latency_ms:.0f} ms",
            escape_markup(check.detail),
        )
    console.print(table)
    console.print(
        f"[dim]checked {report.checked_at:%Y-%m-%d %H:%M:%S} UTC in {report.duration_ms:.0f} ms,"
        f" timeout {report.timeout_seconds:g} s per check[/]"
    )
