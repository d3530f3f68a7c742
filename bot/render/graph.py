"""Render /graph for Slack (a summary, the PNG in its thread) and the terminal (sparklines)."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.markup import escape as escape_markup

from bot.render.common import Block, Message, SlackReply, context, escape, header, section
from bot.render.picture import (
    describe,
    describe_report,
    marker_text,
    spans_text,
    time_text,
    upload_of,
    value_text,
    window_text,
)
from commands.base import format_duration
from commands.graph import GraphData, GraphReport, Series

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


def blocks(report: GraphReport) -> list[Block]:
    """Build the message: what each panel shows in words; the picture follows in the thread."""
    title = " and ".join(panel.title for panel in report.panels)
    result: list[Block] = [header(f"Graph: {title}")]
    for panel in report.panels:
        emoji = ":chart_with_upwards_trend:" if panel.status == "ok" else ":warning:"
        result.append(section(f"{emoji} {escape(describe(panel))}"))
    first = report.panels[0]
    step = format_duration(timedelta(seconds=first.step_seconds))
    queries = " · ".join(f"`{escape(panel.query)}`" for panel in report.panels)
    timing = f" · drawn in {report.render_ms:.0f} ms" if report.render_ms is not None else ""
    result.append(context(f"{queries} · one point every {step}{timing} · picture in the thread"))
    return result


def slack(report: GraphReport) -> SlackReply:
    """Build the reply: the summary in the channel, the PNG (with its text alternative) in the thread."""
    upload = upload_of(report)
    return SlackReply(
        main=Message(text=escape(describe_report(report)), blocks=blocks(report)),
        files=[upload] if upload is not None else [],
    )


def sparkline(series: Series, width: int = SPARK_WIDTH, critical: float | None = None) -> str:
    """Draw a series as rich text, the highest value of each column; gaps are blanks, not zeros."""
    values = series.values
    columns = min(width, len(values)) or 1
    buckets: list[float | None] = []
    for column in range(columns):
        chunk = values[column * len(values) // columns : (column + 1) * len(values) // columns]
        finite = [value for value in chunk if value is not None]
        buckets.append(max(finite) if finite else None)
    present = [value for value in buckets if value is not None]
    if not present:
        return " " * columns
    low, high = min(present), max(present)
    characters = []
    for value in buckets:
        if value is None:
            characters.append(" ")
            continue
        level = 3 if high == low else round((value - low) / (high - low) * (len(BARS) - 1))
        bar = BARS[level]
        characters.append(f"[red]{bar}[/]" if critical is not None and value > critical else bar)
    return "".join(characters)


def terminal(report: GraphReport, console: Console) -> None:
    """Print each panel: a sparkline per series with min, max and last, then thresholds and markers."""
    for panel in report.panels:
        _print_panel(panel, console)


def _print_panel(panel: GraphData, console: Console) -> None:
    console.print(f"[bold]{escape_markup(panel.title)}[/] [dim]{window_text(panel)}[/]")
    if panel.status != "ok":
        console.print(f"  [red]{escape_markup(panel.problem or panel.status)}[/]")
    critical = next((item.value for item in panel.thresholds if item.level == "critical"), None)
    width = max(len(line.name) for line in panel.series) if panel.series else 0
    for line in panel.series:
        finite = [value for value in line.values if value is not None]
        if not finite:
            continue
        last = next(value for value in reversed(line.values) if value is not None)
        figures = (
            f"min {value_text(min(finite), panel.unit)}  max {value_text(max(finite), panel.unit)}"
            f"  last {value_text(last, panel.unit)}"
        )
        name = escape_markup(line.name.ljust(width))
        console.print(f"  {name}  {sparkline(line, critical=critical)}  {figures}")
    peak = panel.peak()
    if peak is not None:
        console.print(f"  peak {value_text(peak.value, panel.unit)} at {time_text(peak.at, panel)} UTC")
    for threshold in panel.thresholds:
        spans = panel.beyond(threshold) if panel.status == "ok" else []
        state = f"[red]above {spans_text(spans, panel, 5)} UTC[/]" if spans else "never above"
        console.print(f"  {threshold.label}: {state}")
    gaps = panel.gaps() if panel.status == "ok" else []
    if gaps:
        console.print(f"  [yellow]no data {spans_text(gaps, panel, 5)} UTC[/]")
    for marker in panel.markers:
        console.print(f"  [magenta]│[/] {escape_markup(marker_text(marker, panel))} UTC")
    hidden = [f"{panel.hidden_series} lower series not shown"] if panel.hidden_series else []
    for note in [*panel.notes, *hidden]:
        console.print(f"  [dim]{escape_markup(note)}[/]")
    console.print(f"  [dim]{escape_markup(panel.query)}[/]")
