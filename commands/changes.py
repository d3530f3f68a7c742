"""What changed just before what broke: each breached check's onset, and the changes before it.

The onset of a check is when its series last crossed its threshold (a Prometheus range query).
Changes come from sources the caller passes in (the engine's containers, the bot's own executed
plans). Each change before an onset, within the horizon, is a suspect, nearest first: a
correlation with its times, said as such, never a verdict.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from adapters.base import classify
from adapters.prometheus import PrometheusAdapter, RangeResult
from commands.base import CommandResult, Model
from commands.formatting import Unit, format_span, format_value
from commands.triage_checklist import Checklist, PromqlCheck, render_query

DEFAULT_SINCE = timedelta(hours=2)
# A change this long before an onset is still shown as a suspect; older ones are only listed.
HORIZON = timedelta(minutes=30)
STEP = timedelta(seconds=15)
MAX_SUSPECTS = 3

ChangeKind = Literal["deploy", "flag", "restart", "restore", "prune", "action"]


class Change(Model):
    """One change to the platform, with where it was seen and, when known, the way back."""

    at: datetime
    kind: ChangeKind
    label: str  # "v2.0.6 deployed", "RATE_LIMIT_ENABLED=false"
    source: str  # "engine", "bot"
    # The command that undoes it (`/rollback v2.0.5`), as tokens after the command's name.
    way_back_command: str | None = None
    way_back: list[str] = Field(default_factory=list)


class Onset(Model):
    """When a breached check's series crossed its threshold, and from what to what."""

    check_id: str
    title: str
    unit: Unit
    level: Literal["warn", "critical"]
    threshold: float
    at: datetime | None  # None: already past the threshold when the window starts
    before: float | None
    after: float | None

    def describe(self) -> str:
        """Say it in words: `the 5xx ratio rose from 0.2 % to 15 %`."""
        verb = "rose" if self.after is None or self.before is None or self.after >= self.before else "fell"
        if self.before is None:
            return f"{self.title} was {format_value(self.after, self.unit)}"
        return (
            f"{self.title} {verb} from {format_value(self.before, self.unit)}"
            f" to {format_value(self.after, self.unit)}"
        )


class Suspect(Model):
    """A change shortly before an onset."""

    change: Change
    onset: Onset
    lead_seconds: float

    def sentence(self) -> str:
        """Say the correlation with its times, never as a cause."""
        return f"{self.change.label} {format_span(self.lead_seconds)} before {self.onset.describe()}"


class ChangesReport(CommandResult):
    """The changes of a window, the onsets of breached checks, and the suspects between them."""

    since: datetime
    until: datetime
    changes: list[Change] = Field(default_factory=list)
    onsets: list[Onset] = Field(default_factory=list)
    suspects: list[Suspect] = Field(default_factory=list)
    # A source or a query that could not be read: the report says which part is missing.
    problems: list[str] = Field(default_factory=list)

    def way_back(self) -> Suspect | None:
        """Return the nearest suspect whose way back is known and is a plan the bot can make."""
        nearest = self.suspects[0] if self.suspects else None
        if nearest is None or nearest.change.way_back_command is None:
            return None
        return nearest if nearest.change.kind in ("deploy", "flag") else None


ChangeSource = Callable[[datetime, datetime], Awaitable[list[Change]]]


def onset_of(
    check: PromqlCheck, answer: RangeResult, level: Literal["warn", "critical"], start: datetime
) -> Onset | None:
    """Find when the check's series last crossed its `level` threshold (None: it never did)."""
    threshold = check.threshold(level)
    if threshold is None:  # a check with one level only (the runbook's 5xx: critical above 5 %)
        level = "critical" if level == "warn" else "warn"
        threshold = check.threshold(level)
    if threshold is None or not answer.series:
        return None
    above = check.direction == "above"
    # The worst series: the one furthest past the threshold at its end.
    points = max(answer.series, key=lambda series: _last(series.points, above)).points
    values = [(at, value) for at, value in points if not math.isnan(value)]
    if not values:
        return None

    def breached(value: float) -> bool:
        return value > threshold if above else value < threshold

    if not breached(values[-1][1]):
        return None
    index = len(values) - 1
    while index > 0 and breached(values[index - 1][1]):
        index -= 1
    if index == 0:
        return Onset(
            check_id=check.id,
            title=check.title,
            unit=check.unit,
            level=level,
            threshold=threshold,
            at=None,
            before=None,
            after=values[-1][1],
        )
    # "Before": the typical value of the five minutes before the crossing, not one noisy sample.
    crossing = values[index][0]
    earlier = sorted(value for at, value in values[:index] if at >= crossing - 300)
    return Onset(
        check_id=check.id,
        title=check.title,
        unit=check.unit,
        level=level,
        threshold=threshold,
        at=datetime.fromtimestamp(crossing, UTC),
        before=earlier[len(earlier) // 2] if earlier else values[index - 1][1],
        after=values[-1][1],
    )


def _last(points: Sequence[tuple[float, float]], above: bool) -> float:
    for _, value in reversed(points):
        if not math.isnan(value):
            return value if above else -value
    return -math.inf


def rank(onsets: Sequence[Onset], changes: Sequence[Change], horizon: timedelta = HORIZON) -> list[Suspect]:
    """Pair each onset with the changes shortly before it, nearest first."""
    suspects = []
    for onset in onsets:
        if onset.at is None:
            continue
        for change in changes:
            lead = (onset.at - change.at).total_seconds()
            if 0 <= lead <= horizon.total_seconds():
                suspects.append(Suspect(change=change, onset=onset, lead_seconds=lead))
    suspects.sort(key=lambda suspect: (suspect.lead_seconds, suspect.onset.check_id))
    return suspects[:MAX_SUSPECTS]


async def _onset(
    prometheus: PrometheusAdapter,
    check: PromqlCheck,
    level: Literal["warn", "critical"],
    window: timedelta,
    start: datetime,
    end: datetime,
    timeout: float,
) -> Onset | None:
    # The rate over the window the triage judged (a 1m triage finds the crossing a 5m one would
    # see only later). The range ends on `end` itself: a point every STEP back from it, so the
    # last point is the series now, as the triage saw it, not up to one step before.
    query = render_query(check.query, max(window, 2 * STEP))
    steps = math.ceil((end - start) / STEP)
    answer = await prometheus.query_range(
        query, (end - steps * STEP).timestamp(), end.timestamp(), STEP.total_seconds(), timeout=timeout
    )
    return onset_of(check, answer, level, start)


async def what_changed(
    prometheus: PrometheusAdapter,
    checklist: Checklist,
    breached: Sequence[tuple[str, Literal["warn", "critical"]]],
    sources: Sequence[tuple[str, ChangeSource]],
    since: timedelta = DEFAULT_SINCE,
    now: datetime | None = None,
    timeout: float = 5.0,
    window: timedelta | None = None,
) -> ChangesReport:
    """Find the onsets of the breached checks and the changes of the window; pair them.

    `breached` names checks (PromQL ones) and the level they are at; their series are rates over
    `window` (default: the checklist's). Every part has its own timeout; a part that fails is
    named in `problems`, and the rest is still answered.
    """
    end = now or datetime.now(UTC)
    start = end - since
    rate_window = window or checklist.window
    checks = {check.id: check for check in checklist.checks if isinstance(check, PromqlCheck)}
    wanted = [(checks[check_id], level) for check_id, level in breached if check_id in checks]
    onset_answers = asyncio.gather(
        *(
            asyncio.wait_for(_onset(prometheus, check, level, rate_window, start, end, timeout), timeout + 1)
            for check, level in wanted
        ),
        return_exceptions=True,
    )
    change_answers = asyncio.gather(
        *(asyncio.wait_for(source(start - HORIZON, end), timeout + 1) for _, source in sources),
        return_exceptions=True,
    )
    problems: list[str] = []
    onsets: list[Onset] = []
    unknown: dict[str, list[str]] = {}  # the reason -> the checks whose onset it hid
    for (check, _), found in zip(wanted, await onset_answers, strict=True):
        if isinstance(found, BaseException):
            unknown.setdefault(_reason(found), []).append(check.title)
        elif found is not None:
            onsets.append(found)
    for reason, titles in unknown.items():
        which = (
            f"the onset of {titles[0]} is" if len(titles) == 1 else f"the onsets of {', '.join(titles)} are"
        )
        problems.append(f"{which} unknown: Prometheus: {reason}")
    changes: list[Change] = []
    for (name, _), seen in zip(sources, await change_answers, strict=True):
        if isinstance(seen, BaseException):
            problems.append(f"changes seen by {name} are missing: {_reason(seen)}")
        else:
            changes.extend(seen)
    changes = merge(changes)
    return ChangesReport(
        since=start,
        until=end,
        changes=[change for change in changes if change.at >= start],
        onsets=onsets,
        suspects=rank(onsets, changes),
        problems=problems,
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return classify(error).detail if isinstance(error, Exception) else type(error).__name__


def merge(changes: Sequence[Change], within: timedelta = timedelta(minutes=2)) -> list[Change]:
    """Drop the engine's sighting of a change the bot itself made (the bot's record knows more)."""
    by_bot = [change for change in changes if change.source == "bot"]
    kept = []
    for change in changes:
        # A rollback or a flag flip by the bot is a new container to the engine: one change, not two.
        duplicate = change.source == "engine" and any(
            abs((mine.at - change.at).total_seconds()) <= within.total_seconds() for mine in by_bot
        )
        if not duplicate:
            kept.append(change)
    return sorted(kept, key=lambda change: change.at)
