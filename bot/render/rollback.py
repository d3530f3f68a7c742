"""Render `/rollback list` for Slack and the terminal (plans and outcomes are the gate's)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from bot.render.common import Message, SlackReply, context, escape, header, section
from commands.rollback import VersionInfo, VersionList


def _when(text: str | None) -> str:
    """Shorten an ISO timestamp to minutes (the engine gives nanoseconds)."""
    if not text:
        return "unknown"
    return text.replace("T", " ")[:16] + " UTC"


def _line(item: VersionInfo, result: VersionList) -> str:
    # Every word here is the engine's (container names, states, image labels): all escaped.
    running = result.running
    mark = " ← *running*" if item.running else ""
    if item.running and running is not None:
        health = f", {escape(running.health)}" if running.health else ""
        mark = f" ← *running* in `{escape(running.name)}` ({escape(running.status)}{health})"
    deployed = f" · deployed {escape(_when(item.deployed_at))}" if item.deployed_at else ""
    return f"• *{escape(item.version)}*{mark} · built {escape(_when(item.built_at))}{deployed}"


def slack(result: Any) -> SlackReply:
    """Build the version list message."""
    if not isinstance(result, VersionList):
        text = escape(str(result))
        return SlackReply(main=Message(text=text, blocks=[section(text)]))
    lines = [_line(item, result) for item in result.versions] or ["• no versions present in the engine"]
    blocks = [header(f"{result.service} versions ({result.image})"), section("\n".join(lines))]
    running = result.running
    if running is None:
        blocks.append(section(f":red_circle: no container of `{escape(result.service)}` is running"))
    elif running.version is None or not any(item.running for item in result.versions):
        blocks.append(section(f"Running now: `{escape(running.image)}` in `{escape(running.name)}`"))
    notes = "Redeploy one with `/rollback <version>`"
    if result.flags:
        notes += " · flags: " + ", ".join(f"`{escape(flag)}`" for flag in result.flags)
    if result.other_tags:
        notes += " · other tags (not versions): " + ", ".join(escape(tag) for tag in result.other_tags)
    blocks.append(context(notes))
    now = running.version if running and running.version else "unknown"
    text = f"{escape(result.service)}: {len(result.versions)} versions, running {escape(now)}"
    return SlackReply(main=Message(text=text, blocks=blocks))


def terminal(result: Any, console: Console) -> None:
    """Print the version list as a table."""
    if not isinstance(result, VersionList):
        console.print(escape_markup(str(result)))
        return
    table = Table(title=f"{result.service} versions ({result.image})", title_justify="left")
    for column in ("version", "running", "built", "deployed"):
        table.add_column(column)
    for item in result.versions:
        running = ""
        if item.running and result.running is not None:
            running = f"{result.running.name} {result.running.status}"
        table.add_row(
            escape_markup(item.version),
            escape_markup(running),
            _when(item.built_at),
            _when(item.deployed_at) if item.deployed_at else "",
        )
    console.print(table)
    if result.running is None:
        console.print(f"[red]no container of {escape_markup(result.service)} is running[/]")
    if result.flags:
        console.print("flags: " + escape_markup(", ".join(result.flags)))
