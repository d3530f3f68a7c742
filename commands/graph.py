"""`/graph`: a check of the triage checklist, or any PromQL expression, over a window of time.

The series come from Prometheus `query_range`; the bot's own actions of the window (rollbacks,
restores, restarts, flag changes, alerts) come from injectable marker sources. The result keeps
the data behind the picture (timestamps, values, thresholds, markers), so that the picture, its
text alternative and the terminal's sparkline are all drawn from the same figures.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from pydantic import Field

from adapters.base import classify
from adapters.prometheus import PrometheusAdapter, PrometheusQueryError, RangeResult
from commands.base import Arguments, CommandResult, Model, UsageError, parse_duration
from commands.formatting import Unit, format_value
from commands.triage_checklist import Checklist, PromqlCheck, render_query

USAGE = (
    "/graph <check|promql> [since=1h] [step=15s] [unit=percent|ratio|seconds|per_second|count|bytes]"
    " — check: 5xx, p95, or a PromQL check id of the triage checklist"
)

MAX_SINCE = timedelta(days=30)
MIN_STEP = timedelta(seconds=1)
# Prometheus refuses more than 11,000 points per series; a picture 1000 px wide shows far fewer.
MAX_POINTS = 1440
MAX_SERIES = 8
UNITS: tuple[Unit, ...] = get_args(Unit)
DEFAULT_RATE_WINDOW = timedelta(minutes=5)

# The runbook's two critical metrics, used when the triage checklist does not define them.
FIVE_XX = "http_5xx_ratio"
P95 = "http_p95_latency"
BUILT_IN_CHECKS: tuple[PromqlCheck, ...] = (
    PromqlCheck(
        id=FIVE_XX,
        title="5xx error ratio",
        kind="promql",
        query=(
            'sum(rate(http_requests_total{status=~"5.."}[$window])) / sum(rate(http_requests_total[$window]))'
        ),
        unit="percent",
        critical=0.05,  # runbook 1.1: alert above 5 %
    ),
    PromqlCheck(
        id=P95,
        title="P95 latency",
        kind="promql",
        query="histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[$window])))",
        unit="seconds",
        critical=2,  # runbook 1.2: alert when P95 is above 2 s
    ),
)
ALIASES = {"5xx": FIVE_XX, "errors": FIVE_XX, "error_ratio": FIVE_XX, "p95": P95, "latency": P95}

# A label matcher whose value lost its quotes (to a shell, at the terminal).
_UNQUOTED_MATCHER = re.compile(r"\{[^}]*[=~]\s*[^\s\"'`,}=~]")
_OPTION_WORD = re.compile(r"^(?:--)?(?:since|step|unit)=\S*$")
# Slack turns typed quotes into typographic ones; PromQL needs plain ones.
_TYPOGRAPHIC_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})

Status = Literal["ok", "no_data", "unavailable", "rejected"]


# --- arguments ------------------------------------------------------------------------------


class GraphArgs(Model):
    """What to draw (a check's id or alias, or PromQL) and over which window."""

    target: str
    since: timedelta | None = None
    step: timedelta | None = None
    unit: Unit | None = None


def parse(tokens: list[str]) -> GraphArgs:
    """Read `/graph` arguments; the positionals, joined by spaces, are the check or the expression."""
    args = Arguments.parse(tokens, USAGE)
    since = args.option("since", _since, None)
    step = args.option("step", _step, None)
    unit = args.option("unit", _unit, None)
    if not args.positionals:
        args.done()
        raise args.fail("missing a check (5xx, p95, a triage check id) or a PromQL expression")
    # Both Slack text and argv arrive split on spaces, and PromQL may contain spaces.
    target = " ".join(args.positionals).strip()
    args.positionals.clear()
    args.done()
    return GraphArgs(target=target, since=since, step=step, unit=unit)


def slack_tokens(text: str) -> list[str]:
    """Split Slack text for /graph: the expression kept whole, quotes and all; options at either end.

    PromQL's label values are quoted (`{status=~"5.."}`): the shell-like split every other command
    uses would remove those quotes.
    """
    words = text.translate(_TYPOGRAPHIC_QUOTES).split()
    options: list[str] = []
    while words and _OPTION_WORD.match(words[-1]):
        options.insert(0, words.pop())
    while words and _OPTION_WORD.match(words[0]):
        options.append(words.pop(0))
    expression = " ".join(words)
    # Quoting the whole expression, as in a shell, is harmless.
    if len(expression) >= 2 and expression[0] == expression[-1] and expression[0] in "'\"":
        expression = expression[1:-1].strip()
    return ([expression] if expression else []) + options


def _since(text: str) -> timedelta:
    return parse_duration(text, maximum=MAX_SINCE)


def _step(text: str) -> timedelta:
    step = parse_duration(text, maximum=timedelta(days=1))
    if step < MIN_STEP:
        raise UsageError("the step must be at least 1s")
    return step


def _unit(text: str) -> Unit:
    wanted = text.strip().lower()
    for unit in UNITS:
        if wanted == unit:
            return unit
    raise UsageError(f"`{text[:20]}` is not a unit (use {', '.join(UNITS)})")


# --- what to draw ---------------------------------------------------------------------------


class Threshold(Model):
    """A horizontal line: a level of the checklist (the runbook's thresholds) at a value."""

    level: Literal["warn", "critical"]
    value: float
    label: str


class GraphTarget(Model):
    """One expression to draw, with its title, unit and thresholds."""

    check_id: str | None
    title: str
    query: str
    unit: Unit | None = None
    thresholds: list[Threshold] = Field(default_factory=list)


def target_of(check: PromqlCheck) -> GraphTarget:
    """Build what to draw from a PromQL check of the checklist, thresholds included."""
    thresholds = []
    for level in ("warn", "critical"):
        value = check.threshold(level)
        if value is not None:
            thresholds.append(
                Threshold(level=level, value=value, label=f"{level} {format_value(value, check.unit)}")
            )
    return GraphTarget(
        check_id=check.id, title=check.title, query=check.query, unit=check.unit, thresholds=thresholds
    )


def named_targets(checklist: Checklist | None) -> dict[str, GraphTarget]:
    """Return every named graph: the built-in two, replaced or joined by the checklist's PromQL checks."""
    found = {check.id: target_of(check) for check in BUILT_IN_CHECKS}
    for check in checklist.checks if checklist is not None else ():
        if isinstance(check, PromqlCheck):
            found[check.id] = target_of(check)
    return found


def is_named(text: str, checklist: Checklist | None) -> bool:
    """Return whether `text` names a graph (5xx, p95, a PromQL check id) rather than being PromQL."""
    return _key(text) in named_targets(checklist)


def _key(text: str) -> str:
    return ALIASES.get(text.lower(), text.lower())


def resolve(text: str, checklist: Checklist | None, unit: Unit | None = None) -> GraphTarget:
    """Return the named check `text` (an id or alias) or else `text` as a PromQL expression."""
    named = named_targets(checklist)
    key = _key(text)
    if key in named:
        target = named[key]
        return target.model_copy(update={"unit": unit}) if unit is not None else target
    return GraphTarget(
        check_id=None, title=text if len(text) <= 60 else text[:59] + "…", query=text, unit=unit
    )


# --- the window -----------------------------------------------------------------------------


class Window(Model):
    """The times asked of Prometheus: `start` to `end` every `step`, both aligned on the step."""

    start: datetime
    end: datetime
    step: timedelta

    def timestamps(self) -> list[datetime]:
        """Return every point of the grid, `start` and `end` included."""
        count = int((self.end - self.start) / self.step) + 1
        return [self.start + index * self.step for index in range(count)]


def plan_window(since: timedelta, step: timedelta, end: datetime | None = None) -> Window:
    """Align the window on the step (stable pictures) and widen the step past MAX_POINTS."""
    seconds = max(step.total_seconds(), math.ceil(since.total_seconds() / MAX_POINTS))
    last = (end or datetime.now(UTC)).timestamp()
    aligned_end = math.floor(last / seconds) * seconds
    count = max(1, math.ceil(since.total_seconds() / seconds))
    return Window(
        start=datetime.fromtimestamp(aligned_end - count * seconds, UTC),
        end=datetime.fromtimestamp(aligned_end, UTC),
        step=timedelta(seconds=seconds),
    )


def rate_window(checklist: Checklist | None, step: timedelta) -> timedelta:
    """Return what `$window` becomes: the checklist's, but never so short that samples are skipped."""
    base = checklist.window if checklist is not None else DEFAULT_RATE_WINDOW
    return max(base, 2 * step)


# --- the bot's own actions, marked on the time axis ------------------------------------------


class Marker(Model):
    """Something that happened at a moment of the window: an action of the bot, an alert."""

    at: datetime
    kind: str  # rollback, restore, restart, flag, drill, alert, or any other source's own word
    label: str


# Returns the markers between two times; a failure is reported beside the picture, never raised.
MarkerSource = Callable[[datetime, datetime], Awaitable[list[Marker]]]


async def collect_markers(
    sources: Sequence[MarkerSource], start: datetime, end: datetime, timeout: float
) -> tuple[list[Marker], list[str]]:
    """Ask every source at once; return the markers inside the window and a note per failed source."""
    answers = await asyncio.gather(
        *(asyncio.wait_for(source(start, end), timeout) for source in sources), return_exceptions=True
    )
    markers: list[Marker] = []
    notes: list[str] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            failure = classify(answer)
            notes.append(f"some actions may be missing: {failure.reason}: {failure.detail}")
            continue
        markers.extend(marker for marker in answer if start <= marker.at <= end)
    return sorted(markers, key=lambda marker: marker.at), notes


# --- the data behind a picture --------------------------------------------------------------


class Series(Model):
    """One line: its name, labels and a value per timestamp of the panel (None: a gap)."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    values: list[float | None]


class Point(Model):
    """A value of one series at one time."""

    series: str
    at: datetime
    value: float


class Span(Model):
    """From one timestamp of the grid to another, both included."""

    start: datetime
    end: datetime


class GraphData(Model):
    """Everything one panel shows: the series on the time grid, thresholds, markers, and problems."""

    title: str
    query: str  # as sent to Prometheus, `$window` replaced
    check_id: str | None = None
    unit: Unit | None = None
    start: datetime
    end: datetime
    step_seconds: float
    timestamps: list[datetime]
    series: list[Series]
    hidden_series: int = 0
    thresholds: list[Threshold] = Field(default_factory=list)
    markers: list[Marker] = Field(default_factory=list)
    status: Status
    problem: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def since(self) -> timedelta:
        """Return the length of the window."""
        return self.end - self.start

    def finite_points(self) -> list[Point]:
        """Return every value that is a number (gaps left out)."""
        return [
            Point(series=line.name, at=at, value=value)
            for line in self.series
            for at, value in zip(self.timestamps, line.values, strict=True)
            if value is not None
        ]

    def peak(self) -> Point | None:
        """Return the highest value of the window and when (the first time, on a tie)."""
        points = self.finite_points()
        return max(points, key=lambda point: (point.value, -point.at.timestamp())) if points else None

    def last(self) -> Point | None:
        """Return the latest value (the highest, when several series have one then)."""
        points = self.finite_points()
        return max(points, key=lambda point: (point.at, point.value)) if points else None

    def gaps(self) -> list[Span]:
        """Return the runs of timestamps where no series has a value (no sample, or NaN)."""
        empty = [
            all(line.values[index] is None for line in self.series) for index in range(len(self.timestamps))
        ]
        return _runs(self.timestamps, empty)

    def beyond(self, threshold: Threshold) -> list[Span]:
        """Return the runs of timestamps where some series is above the threshold."""
        over = []
        for index in range(len(self.timestamps)):
            values = [line.values[index] for line in self.series]
            over.append(any(value is not None and value > threshold.value for value in values))
        return _runs(self.timestamps, over)

    def critical_now(self) -> bool:
        """Return whether the latest value is above the critical threshold."""
        last = self.last()
        return last is not None and any(
            item.level == "critical" and last.value > item.value for item in self.thresholds
        )


def _runs(timestamps: list[datetime], flags: list[bool]) -> list[Span]:
    spans: list[Span] = []
    begin: int | None = None
    for index, flag in enumerate([*flags, False]):
        if flag and begin is None:
            begin = index
        elif not flag and begin is not None:
            spans.append(Span(start=timestamps[begin], end=timestamps[index - 1]))
            begin = None
    return spans


class GraphReport(CommandResult):
    """One or more panels over the same window; `png` is the picture drawn by the bot from them."""

    panels: list[GraphData]
    # The picture is kept out of JSON: the panels are the data, the picture only their drawing.
    png: bytes | None = Field(default=None, exclude=True, repr=False)
    render_ms: float | None = None

    @property
    def ok(self) -> bool:
        """Return whether every panel has data and none is above its critical threshold now."""
        return all(panel.status == "ok" and not panel.critical_now() for panel in self.panels)


# --- fetching -------------------------------------------------------------------------------


def _series_name(labels: dict[str, str], common: set[str], fallback: str) -> str:
    """Name a series by the labels that tell it apart from the others (all of them would not fit)."""
    shown = {key: value for key, value in labels.items() if key != "__name__" and key not in common}
    if not shown:
        return labels.get("__name__", fallback)
    return ", ".join(f"{key}={value}" for key, value in sorted(shown.items()))


def _common_labels(label_sets: list[dict[str, str]]) -> set[str]:
    if len(label_sets) < 2:
        # A single series is named by the panel's title, whatever its labels.
        return set().union(*label_sets) if label_sets else set()
    first = label_sets[0]
    return {key for key, value in first.items() if all(other.get(key) == value for other in label_sets[1:])}


def _on_grid(answer: RangeResult, window: Window, title: str) -> tuple[list[Series], int]:
    """Put every series on the window's grid: NaN, ±Inf and missing samples become gaps (None)."""
    stamps = window.timestamps()
    origin, step = window.start.timestamp(), window.step.total_seconds()
    lines: list[tuple[float, Series]] = []
    common = _common_labels([raw.labels for raw in answer.series])
    for raw in answer.series:
        values: list[float | None] = [None] * len(stamps)
        for at, value in raw.points:
            index = round((at - origin) / step)
            if 0 <= index < len(stamps) and math.isfinite(value):
                values[index] = value
        finite = [value for value in values if value is not None]
        peak = max(finite) if finite else -math.inf
        name = _series_name(raw.labels, common, title)
        lines.append((peak, Series(name=name, labels=raw.labels, values=values)))
    # The series that matter most in an incident are the highest ones.
    lines.sort(key=lambda item: item[0], reverse=True)
    shown = [line for _, line in lines[:MAX_SERIES]]
    return shown, max(0, len(lines) - MAX_SERIES)


async def fetch_panel(
    prometheus: PrometheusAdapter,
    target: GraphTarget,
    window: Window,
    rate: timedelta,
    markers: list[Marker],
    timeout: float,
) -> GraphData:
    """Ask Prometheus for one target over the window; any failure becomes the panel's status."""
    query = render_query(target.query, rate)
    panel = GraphData(
        title=target.title,
        query=query,
        check_id=target.check_id,
        unit=target.unit,
        start=window.start,
        end=window.end,
        step_seconds=window.step.total_seconds(),
        timestamps=window.timestamps(),
        series=[],
        thresholds=target.thresholds,
        markers=markers,
        status="ok",
    )
    try:
        answer = await asyncio.wait_for(
            prometheus.query_range(
                query, window.start.timestamp(), window.end.timestamp(), window.step.total_seconds(), timeout
            ),
            # The HTTP call has this timeout already; this one bounds the worker thread's queue too.
            timeout + 1,
        )
    except PrometheusQueryError as error:
        if error.error_type == "bad_data":
            return panel.model_copy(
                update={"status": "rejected", "problem": f"Prometheus rejected the expression: {error.error}"}
            )
        return panel.model_copy(
            update={"status": "unavailable", "problem": f"Prometheus error {error.error_type}: {error.error}"}
        )
    except Exception as error:  # unreachable, timeout, odd answer: the panel says so
        failure = classify(error)
        detail = failure.detail if failure.reason != "timeout" else f"no answer within {timeout:g} s"
        return panel.model_copy(
            update={
                "status": "unavailable",
                "problem": f"Prometheus unreachable ({failure.reason}): {detail}",
            }
        )
    series, hidden = _on_grid(answer, window, target.title)
    has_data = any(value is not None for line in series for value in line.values)
    return panel.model_copy(
        update={
            "series": series,
            "hidden_series": hidden,
            "status": "ok" if has_data else "no_data",
            "problem": None if has_data else "no data in this window",
            "notes": list(answer.warnings),
        }
    )


async def fetch_report(
    prometheus: PrometheusAdapter,
    targets: Sequence[GraphTarget],
    window: Window,
    checklist: Checklist | None,
    marker_sources: Sequence[MarkerSource],
    timeout: float,
) -> GraphReport:
    """Fetch the markers once and every target at once; one panel per target, same window."""
    markers, notes = await collect_markers(marker_sources, window.start, window.end, timeout)
    rate = rate_window(checklist, window.step)
    panels = await asyncio.gather(
        *(fetch_panel(prometheus, target, window, rate, markers, timeout) for target in targets)
    )
    return GraphReport(panels=[panel.model_copy(update={"notes": panel.notes + notes}) for panel in panels])


async def run(
    args: GraphArgs,
    prometheus: PrometheusAdapter,
    checklist: Checklist | None,
    marker_sources: Sequence[MarkerSource],
    *,
    default_since: timedelta,
    resolution: timedelta,
    timeout: float,
    end: datetime | None = None,
) -> GraphReport:
    """Fetch one check or expression; an expression Prometheus rejects is a usage error with its text."""
    target = resolve(args.target, checklist, args.unit)
    window = plan_window(args.since or default_since, args.step or resolution, end)
    report = await fetch_report(prometheus, [target], window, checklist, marker_sources, timeout)
    panel = report.panels[0]
    if panel.status == "rejected":
        message = str(panel.problem)
        if _UNQUOTED_MATCHER.search(args.target) and not any(quote in args.target for quote in "\"'`"):
            message += (
                " (were the quotes of a label value lost to the shell? Put the whole expression in"
                " single quotes: 'up{job=\"3dpot-backend\"}')"
            )
        raise UsageError(message, USAGE)
    return report


async def key_metrics(
    prometheus: PrometheusAdapter,
    checklist: Checklist | None,
    marker_sources: Sequence[MarkerSource],
    *,
    since: timedelta,
    resolution: timedelta,
    timeout: float,
    end: datetime | None = None,
) -> GraphReport:
    """Fetch the runbook's two critical metrics, 5xx ratio and P95 latency, as two panels."""
    named = named_targets(checklist)
    window = plan_window(since, resolution, end)
    targets = [named[FIVE_XX], named[P95]]
    return await fetch_report(prometheus, targets, window, checklist, marker_sources, timeout)
