"""Incident metrics from the bot's own records: how many, how fast a commander, how fast resolved.

Definitions (also in the README):
- an incident counts in the window when it was declared within it (`since=`, default 90 days);
- time to commander (MTTA): from when the impact started (the alert's start when declared from an
  alert, else the declaration) to when the incident first had a commander (the declarer, who takes
  it when declaring from Slack, or the first `/incident commander`); incidents that never had one
  are counted apart, not as zero;
- time to resolution (MTTR): from the same start to the resolution, for resolved incidents only;
  open ones are counted apart;
- median and P90 by linear interpolation between the closest ranks (PostgreSQL's percentile_cont,
  numpy's default): with one incident both are its own time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import Field

from adapters.incident_store import SEVERITIES, Incident, Severity
from commands.base import Model


class Durations(Model):
    """A set of durations (seconds) summarised: how many, median, P90."""

    count: int
    median_seconds: float | None = None
    p90_seconds: float | None = None


class SeverityStats(Model):
    """The figures of one severity (or of all: severity None)."""

    severity: Severity | None
    declared: int
    open: int
    resolved: int
    # Declared and never given a commander: outside the time to commander.
    without_commander: int
    time_to_commander: Durations
    time_to_resolution: Durations


class IncidentStats(Model):
    """Incidents declared in a window, by severity and in all."""

    since: datetime
    until: datetime
    window_seconds: float
    by_severity: list[SeverityStats] = Field(default_factory=list)
    total: SeverityStats


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the percentile by linear interpolation between closest ranks (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(seconds: Sequence[float]) -> Durations:
    """Summarise durations: count, median, P90."""
    return Durations(
        count=len(seconds), median_seconds=percentile(seconds, 0.5), p90_seconds=percentile(seconds, 0.9)
    )


def severity_stats(severity: Severity | None, incidents: Sequence[Incident]) -> SeverityStats:
    """Compute one row of the figures."""
    to_commander = [
        max((incident.acknowledged_at - incident.started_at).total_seconds(), 0.0)
        for incident in incidents
        if incident.acknowledged_at is not None
    ]
    to_resolution = [
        max((incident.resolved_at - incident.started_at).total_seconds(), 0.0)
        for incident in incidents
        if incident.resolved_at is not None
    ]
    return SeverityStats(
        severity=severity,
        declared=len(incidents),
        open=sum(1 for incident in incidents if incident.status == "open"),
        resolved=len(to_resolution),
        without_commander=len(incidents) - len(to_commander),
        time_to_commander=summarise(to_commander),
        time_to_resolution=summarise(to_resolution),
    )


def compute(incidents: Sequence[Incident], since: timedelta, now: datetime) -> IncidentStats:
    """Compute the figures of the incidents declared within `since` before `now`."""
    start = now - since
    inside = [incident for incident in incidents if start <= incident.declared_at <= now]
    rows = [
        severity_stats(severity, [incident for incident in inside if incident.severity == severity])
        for severity in SEVERITIES
    ]
    return IncidentStats(
        since=start,
        until=now,
        window_seconds=since.total_seconds(),
        by_severity=rows,
        total=severity_stats(None, inside),
    )


def format_seconds(seconds: float | None) -> str:
    """Write a duration of the metrics for people: 42 s, 12 min, 2 h 05 min, 1 d 3 h; — for none."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
