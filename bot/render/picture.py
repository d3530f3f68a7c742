"""Pictures of graph panels (matplotlib's Agg backend, in a worker thread) and their text alternative."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.render.common import Upload, clip, escape
from bot.render.incident_stats import draw
from commands.base import CommandResult, format_duration
from commands.formatting import Unit, format_bytes, format_value
from commands.graph import GraphData, GraphReport, Marker, Point, Span
from commands.incident import IncidentResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ALT_TEXT_LIMIT = 1000  # Slack's limit for a file's alt text
WIDTH_INCHES = 11.0
PANEL_INCHES = 4.0
# Room around the plots: title and action badges above, times and caption below, legend right.
TOP_INCHES, BOTTOM_INCHES, GAP_INCHES, SUPTITLE_INCHES = 0.5, 0.75, 0.95, 0.4
LEFT_FRACTION, RIGHT_FRACTION = 0.075, 0.715
LEGEND_LABEL = 44  # characters of a legend entry; the legend has the right quarter of the width
DPI = 100
LINE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
THRESHOLD_COLOURS = {"critical": "#d62728", "warn": "#ff7f0e"}
MARKER_COLOURS = {
    "rollback": "#6a3d9a",
    "restore": "#1f78b4",
    "restart": "#33a02c",
    "flag": "#b15928",
    "alert": "#e31a1c",
    "drill": "#666666",
    "deploy": "#ff7f00",
    "onset": "#000000",
}
OTHER_MARKER_COLOUR = "#444444"
MAX_MARKERS_LISTED = 10
UNIT_WORDS: dict[str, str] = {
    "percent": "%",
    "ratio": "ratio",
    "seconds": "seconds",
    "per_second": "per second",
    "count": "count",
    "bytes": "bytes",
}
MESSAGES = {
    "no_data": "No data in this window",
    "unavailable": "Prometheus unreachable",
    "rejected": "Prometheus rejected the expression",
}


# --- words ------------------------------------------------------------------------------------


def value_text(value: float, unit: Unit | None) -> str:
    """Write a value in the panel's unit: 12 %, 3.9 s, 0.42/s, 8.8 MB."""
    return format_value(value, unit or "count")


def time_text(at: datetime, panel: GraphData) -> str:
    """Write a time of the panel in UTC, with the date when the window is longer than a day."""
    at = at.astimezone(UTC)
    return f"{at:%m-%d %H:%M}" if panel.since > timedelta(days=1) else f"{at:%H:%M}"


def window_text(panel: GraphData) -> str:
    """Describe the window: `last 1h to 2026-11-01 14:05 UTC`."""
    return f"last {format_duration(panel.since)} to {panel.end:%Y-%m-%d %H:%M} UTC"


def _point_text(point: Point, panel: GraphData) -> str:
    where = f" ({point.series})" if len(panel.series) > 1 else ""
    return f"{value_text(point.value, panel.unit)}{where} at {time_text(point.at, panel)} UTC"


def marker_text(marker: Marker, panel: GraphData) -> str:
    """Write a marker as `rollback v2.0.5 at 13:32`."""
    return f"{marker.label} at {time_text(marker.at, panel)}"


def spans_text(spans: Sequence[Span], panel: GraphData, limit: int = 3) -> str:
    """Write runs of time as `13:20–13:24, 13:28–13:34 and 2 more`."""
    texts = []
    for span in spans[:limit]:
        start, end = time_text(span.start, panel), time_text(span.end, panel)
        texts.append(start if start == end else f"{start}–{end}")
    shown = ", ".join(texts)
    return shown + (f" and {len(spans) - limit} more" if len(spans) > limit else "")


def describe(panel: GraphData) -> str:
    """Write the text alternative of a panel: title, window, last value, peak and when, and the rest."""
    sentences = [f"{panel.title}, {window_text(panel)}"]
    last, peak = panel.last(), panel.peak()
    if panel.status != "ok" or last is None or peak is None:
        sentences.append(f"{panel.problem or MESSAGES.get(panel.status, 'no data')}")
    else:
        sentences.append(f"last {_point_text(last, panel)}; peak {_point_text(peak, panel)}")
        for threshold in panel.thresholds:
            spans = panel.beyond(threshold)
            if spans:
                sentences.append(f"above {threshold.label} {spans_text(spans, panel)} UTC")
            else:
                sentences.append(f"never above {threshold.label}")
        gaps = panel.gaps()
        if gaps:
            sentences.append(f"no data {spans_text(gaps, panel)} UTC")
    if panel.markers:
        shown = ", ".join(marker_text(marker, panel) for marker in panel.markers[:5])
        more = f" and {len(panel.markers) - 5} more" if len(panel.markers) > 5 else ""
        sentences.append(f"marked: {shown}{more}")
    return ". ".join(sentences) + "."


def describe_report(report: GraphReport, limit: int = ALT_TEXT_LIMIT) -> str:
    """Write the text alternative of a whole picture, within Slack's alt-text limit."""
    text = " ".join(describe(panel) for panel in report.panels)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def picture_title(report: GraphReport) -> str:
    """Title the picture: the metrics and the window."""
    names = " and ".join(panel.title for panel in report.panels)
    return f"{names}, {window_text(report.panels[0])}" if report.panels else "graph"


def filename(report: GraphReport) -> str:
    """Name the PNG after its first panel and the end of the window."""
    panel = report.panels[0]
    stem = panel.check_id or "promql"
    if len(report.panels) > 1:
        stem = "key-metrics"
    return f"graph-{stem.replace('_', '-')}-{panel.end:%Y%m%dT%H%MZ}.png"


def upload_of(report: GraphReport) -> Upload | None:
    """Build the Slack upload of a rendered report (None before it is rendered)."""
    if report.png is None:
        return None
    # Titles, queries, series and markers come from users and Prometheus: escaped like any message text.
    return Upload(
        filename=filename(report),
        content=report.png,
        title=escape(picture_title(report)),
        alt_text=clip(escape(describe_report(report)), ALT_TEXT_LIMIT),
    )


# --- the picture --------------------------------------------------------------------------------


async def picture_of(result: CommandResult) -> bytes | None:
    """Return the PNG of a result that has one (drawing it now if it was not), else None."""
    if isinstance(result, IncidentResult) and result.stats is not None:
        return result.png or (await draw(result)).png
    if not isinstance(result, GraphReport):
        return None
    if result.png is None:
        result = await render(result)
    return result.png


async def render(report: GraphReport) -> GraphReport:
    """Draw the report's picture in a worker thread; return the report with its PNG and the time taken."""
    started = time.perf_counter()
    png = await asyncio.to_thread(render_png, report.panels)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return report.model_copy(update={"png": png, "render_ms": elapsed_ms})


def render_png(panels: Sequence[GraphData]) -> bytes:
    """Draw one panel per GraphData, stacked on a shared UTC time axis; return the PNG."""
    # Imported here: matplotlib takes a second to import, and most commands never draw.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = max(1, len(panels))
    height = PANEL_INCHES * count + (SUPTITLE_INCHES if count > 1 else 0.0)
    figure = Figure(figsize=(WIDTH_INCHES, height), dpi=DPI)
    # Fixed margins, not constrained layout: that would lay the figure out twice, doubling the time.
    top = TOP_INCHES + (SUPTITLE_INCHES if count > 1 else 0.0)
    axes_height = (height - top - BOTTOM_INCHES - GAP_INCHES * (count - 1)) / count
    figure.subplots_adjust(
        left=LEFT_FRACTION,
        right=RIGHT_FRACTION,
        top=1 - top / height,
        bottom=BOTTOM_INCHES / height,
        hspace=GAP_INCHES / axes_height,
    )
    # The Agg canvas, not pyplot: pyplot's global state is not safe in worker threads.
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, 1, sharex=True, squeeze=False)[:, 0]
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        _draw_panel(ax, panel, bottom=index == count - 1, alone=count == 1)
    if len(panels) > 1:
        figure.suptitle(f"3dPot key metrics, {window_text(panels[0])}", fontsize=13, fontweight="bold")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _draw_panel(ax: Axes, panel: GraphData, bottom: bool, alone: bool) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter
    from matplotlib.transforms import blended_transform_factory

    times = [_naive(at) for at in panel.timestamps]
    half_step = timedelta(seconds=panel.step_seconds / 2)
    # NaN, not zero: matplotlib breaks the line there, so a gap is drawn as a gap.
    for index, line in enumerate(panel.series):
        values = [math.nan if value is None else value for value in line.values]
        label = _clip(line.name if len(panel.series) > 1 else panel.title, LEGEND_LABEL)
        ax.plot(times, values, color=LINE_COLOURS[index % len(LINE_COLOURS)], linewidth=1.6, label=label)
    for number, gap in enumerate(panel.gaps() if panel.status == "ok" else []):
        ax.axvspan(
            _naive(gap.start - half_step),
            _naive(gap.end + half_step),
            facecolor="#d9d9d9",
            edgecolor="#9e9e9e",
            hatch="//",
            linewidth=0,
            alpha=0.6,
            label="no data" if number == 0 else None,
        )
    peak = panel.peak()
    top = max([peak.value if peak else 0.0, *(item.value for item in panel.thresholds)])
    values_below_zero = [point.value for point in panel.finite_points() if point.value < 0]
    low = min(values_below_zero) * 1.15 if values_below_zero else 0.0
    ax.set_ylim(low, top * 1.25 if top > 0 else 1.0)
    left = blended_transform_factory(ax.transAxes, ax.transData)
    for threshold in panel.thresholds:
        colour = THRESHOLD_COLOURS[threshold.level]
        label = f"{threshold.label} (runbook)"
        ax.axhline(threshold.value, color=colour, linestyle="--", linewidth=1.3, label=label)
        ax.text(
            0.005,
            threshold.value,
            f" {threshold.label}",
            transform=left,
            color=colour,
            fontsize=9,
            fontweight="bold",
            va="bottom",
            ha="left",
        )
    _draw_markers(ax, panel)
    last = panel.last()
    if peak is not None and panel.status == "ok":
        at = _naive(peak.at)
        # Near the right edge the text goes to the left of the point, not into the legend.
        late = (peak.at - panel.start) > panel.since * 0.7
        text = f"peak {value_text(peak.value, panel.unit)} at {time_text(peak.at, panel)}"
        if last is not None and last.at == peak.at:
            text += " (last)"
        ax.plot([at], [peak.value], marker="o", color="#d62728", markersize=6, zorder=5)
        ax.annotate(
            text,
            xy=(at, peak.value),
            xytext=(-6 if late else 6, 6),
            textcoords="offset points",
            ha="right" if late else "left",
            fontsize=8.5,
            color="#d62728",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    if last is not None and panel.status == "ok" and (peak is None or last.at != peak.at):
        ax.annotate(
            f"last {value_text(last.value, panel.unit)}",
            xy=(_naive(last.at), last.value),
            xytext=(-4, 6),
            textcoords="offset points",
            ha="right",
            fontsize=8.5,
            color="#333333",
        )
    if panel.status != "ok":
        ax.text(
            0.5,
            0.5,
            _wrap(panel.problem or MESSAGES[panel.status], 70),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            color="#b00020",
            bbox={"boxstyle": "round,pad=0.6", "facecolor": "#fff3f3", "edgecolor": "#b00020"},
        )
    title = panel.title if not alone else f"{panel.title} — {window_text(panel)}"
    ax.set_title(title, fontsize=11.5, loc="left", fontweight="bold", pad=12)
    unit_word = UNIT_WORDS.get(panel.unit or "", "")
    ax.set_ylabel(f"{panel.title} ({unit_word})" if unit_word else panel.title, fontsize=9.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _tick(value, panel.unit)))
    ax.set_xlim(_naive(panel.start), _naive(panel.end))
    # matplotlib.dates ships without annotations for these two constructors.
    locator = mdates.AutoDateLocator(minticks=5, maxticks=12)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    pattern = "%m-%d %H:%M" if panel.since > timedelta(days=1) else "%H:%M"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(pattern))  # type: ignore[no-untyped-call]
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    if bottom:
        ax.set_xlabel("time (UTC)", fontsize=9.5)
    ax.tick_params(labelsize=8.5, labelbottom=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0)
    step = format_duration(timedelta(seconds=panel.step_seconds))
    caption = f"PromQL: {_clip(panel.query, 150)} · one point every {step}"
    extra = [*panel.notes]
    if panel.hidden_series:
        extra.append(f"{panel.hidden_series} lower series not shown")
    if extra:
        caption += " · " + "; ".join(_clip(note, 90) for note in extra[:2])
    ax.annotate(
        caption,
        xy=(0, 0),
        xycoords="axes fraction",
        # Under the times, and under the axis label on the bottom panel.
        xytext=(0, -38 if bottom else -24),
        textcoords="offset points",
        fontsize=7.5,
        color="#666666",
        va="top",
    )


def _draw_markers(ax: Axes, panel: GraphData) -> None:
    """Draw each marker as a line with a numbered badge above the plot; the legend says what it was."""
    from matplotlib.transforms import blended_transform_factory

    above = blended_transform_factory(ax.transData, ax.transAxes)
    for number, marker in enumerate(panel.markers, start=1):
        colour = MARKER_COLOURS.get(marker.kind, OTHER_MARKER_COLOUR)
        at = _naive(marker.at)
        ax.axvline(at, color=colour, linewidth=1.4, linestyle="-.", alpha=0.9)
        # Numbers, not the labels themselves: labels of actions minutes apart would overlap.
        ax.text(
            at,
            1.0,
            str(number),
            transform=above,
            ha="center",
            va="center",
            fontsize=8,
            fontweight="bold",
            color="white",
            clip_on=False,
            zorder=6,
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": colour, "edgecolor": "white"},
        )
        if number <= MAX_MARKERS_LISTED:
            # An empty line: only its legend entry is drawn.
            ax.plot(
                [],
                [],
                color=colour,
                linestyle="-.",
                linewidth=1.4,
                label=f"{number}  {time_text(marker.at, panel)}  {_clip(marker.label, LEGEND_LABEL - 10)}",
            )
    hidden = len(panel.markers) - MAX_MARKERS_LISTED
    if hidden > 0:
        ax.plot([], [], linestyle="none", label=f"… and {hidden} more actions")


def _tick(value: float, unit: Unit | None) -> str:
    if unit == "percent":
        return f"{value * 100:.3g} %"
    if unit == "seconds":
        return f"{value:.3g} s"
    if unit == "per_second":
        return f"{value:.3g}/s"
    if unit == "bytes":
        return format_bytes(value)
    return f"{value:.4g}"


def _naive(at: datetime) -> Any:
    # Plotted times are UTC without a zone: the axis is labelled "time (UTC)" and shows them as is.
    return at.astimezone(UTC).replace(tzinfo=None)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines[:4])
