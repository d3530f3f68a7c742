"""Render `/incident stats`: a table in Slack with its picture in the thread, a table at the terminal.

Every figure is the bot's own (counts, durations); nothing typed by anyone is shown here.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from bot.render.common import Block, Message, SlackReply, Upload, context, header, section
from commands.base import format_duration
from commands.incident import IncidentResult
from commands.incident_stats import Durations, IncidentStats, SeverityStats, format_seconds

DEFINITIONS = (
    "Declared within the window. Time to commander (MTTA): from the start of the impact (the alert's"
    " start, else the declaration) to the first commander. Time to resolution (MTTR): from the same start"
    " to the resolution, resolved incidents only. Median and P90, interpolated; — where there is none."
)
_COLUMNS = ("severity", "declared", "open", "MTTA median", "MTTA P90", "MTTR median", "MTTR P90")
SEVERITY_COLOURS = {"P1": "#d62728", "P2": "#ff7f0e", "P3": "#e6b800", "P4": "#1f77b4"}


def window_text(stats: IncidentStats) -> str:
    """Say which window the figures cover: the last 90d (as the grammar writes it)."""
    return f"the last {format_duration(timedelta(seconds=stats.window_seconds))}"


def row_cells(row: SeverityStats) -> list[str]:
    """Write one row of the table."""
    return [
        row.severity or "all",
        str(row.declared),
        str(row.open),
        format_seconds(row.time_to_commander.median_seconds),
        format_seconds(row.time_to_commander.p90_seconds),
        format_seconds(row.time_to_resolution.median_seconds),
        format_seconds(row.time_to_resolution.p90_seconds),
    ]


def table_text(stats: IncidentStats) -> str:
    """Write the figures as a fixed-width table (for a code block)."""
    rows = [list(_COLUMNS), *(row_cells(row) for row in [*stats.by_severity, stats.total])]
    widths = [max(len(row[index]) for row in rows) for index in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    )


def summary_line(stats: IncidentStats) -> str:
    """Say it in one line: how many, and the overall medians."""
    total = stats.total
    return (
        f"{total.declared} incidents in {window_text(stats)}; time to commander median"
        f" {format_seconds(total.time_to_commander.median_seconds)}, time to resolution median"
        f" {format_seconds(total.time_to_resolution.median_seconds)}"
    )


def slack_stats(result: IncidentResult) -> SlackReply:
    """Post the table in the channel and its picture in the thread."""
    stats = result.stats
    assert stats is not None
    blocks: list[Block] = [
        header(f"Incidents, {window_text(stats)}"),
        section(f"```{table_text(stats)}```"),
    ]
    unassigned = stats.total.without_commander
    if unassigned:
        blocks.append(
            section(f"{unassigned} of them never had a commander (left out of the time to commander).")
        )
    blocks.append(context(DEFINITIONS))
    files = []
    if result.png is not None:
        files.append(
            Upload(
                filename="incident-stats.png",
                content=result.png,
                title=f"Incidents, {window_text(stats)}",
                alt_text=summary_line(stats),
            )
        )
    return SlackReply(main=Message(text=summary_line(stats), blocks=blocks), files=files)


def terminal_stats(result: IncidentResult, console: Console) -> None:
    """Print the table, one row per severity and one for all."""
    stats = result.stats
    assert stats is not None
    table = Table(title=f"Incidents, {window_text(stats)}", show_header=True, header_style="bold")
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "severity" else "right")
    for row in stats.by_severity:
        table.add_row(*row_cells(row))
    table.add_row(*row_cells(stats.total), style="bold")
    console.print(table)
    if stats.total.without_commander:
        console.print(f"{stats.total.without_commander} never had a commander (left out of MTTA).")
    console.print(DEFINITIONS, style="dim")


async def draw(result: IncidentResult) -> IncidentResult:
    """Draw the picture of the figures in a worker thread; return the result holding it."""
    if result.stats is None:
        return result
    png = await asyncio.to_thread(stats_png, result.stats)
    return result.model_copy(update={"png": png})


def stats_png(stats: IncidentStats) -> bytes:
    """Draw the medians (bars) and P90s (marks) of both times, by severity, in minutes."""
    # Imported here: matplotlib takes a second to import, and most commands never draw.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    names = [row.severity or "all" for row in stats.by_severity]
    panels: list[tuple[Any, str, Callable[[SeverityStats], Durations]]] = [
        (axes[0], "Time to commander (MTTA)", _to_commander),
        (axes[1], "Time to resolution (MTTR)", _to_resolution),
    ]
    for ax, title, pick in panels:
        medians = [(pick(row).median_seconds or 0.0) / 60 for row in stats.by_severity]
        p90s = [(pick(row).p90_seconds or 0.0) / 60 for row in stats.by_severity]
        colours = [SEVERITY_COLOURS.get(name, "#7f7f7f") for name in names]
        bars = ax.bar(names, medians, color=colours, label="median")
        ax.scatter(names, p90s, marker="_", s=900, color="#000000", linewidths=2.5, label="P90", zorder=3)
        for bar, row in zip(bars, stats.by_severity, strict=True):
            count = pick(row).count
            ax.annotate(
                f"n={count}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax.set_title(title, fontsize=12, fontweight="bold")
        ax.set_ylabel("minutes")
        ax.set_ylim(0, max([*p90s, *medians, 1.0]) * 1.25)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", fontsize=9)
    figure.suptitle(
        f"{stats.total.declared} incidents declared in {window_text(stats)}", fontsize=13, fontweight="bold"
    )
    figure.subplots_adjust(left=0.07, right=0.98, top=0.82, bottom=0.1, wspace=0.25)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def _to_commander(row: SeverityStats) -> Durations:
    return row.time_to_commander


def _to_resolution(row: SeverityStats) -> Durations:
    return row.time_to_resolution
