"""How a measurement becomes a verdict: the thresholds as text, the status, the headline, the advice."""

from __future__ import annotations

import math
from collections.abc import Sequence

from commands.formatting import Unit, format_value
from commands.triage.models import STATUS_ORDER, AdviceShown, Finding, Status
from commands.triage.sources import Measurement
from commands.triage_checklist import (
    Check,
    Checklist,
    ClockCheck,
    ContainersCheck,
    DiskCheck,
    PostgresConnectionsCheck,
    PostgresSizeCheck,
    PromqlCheck,
    RedisClientsCheck,
    RedisMemoryCheck,
    StorageCheck,
)


def threshold_text(check: Check, unit: Unit) -> str:
    """Write a check's thresholds for people: `warn > 5 %, critical > 10 %`, baselines included."""
    sign = ">" if check.direction == "above" else "<"
    parts = []
    factors = []
    for level in ("warn", "critical"):
        threshold = check.threshold(level)
        if threshold is None:
            continue
        parts.append(f"{level} {sign} {format_value(threshold, unit)}")
        factor = check.multiple(level)
        if factor is not None:
            factors.append(f"{factor:g}×")
    if not parts:
        return "none (shown, not judged)"
    text = ", ".join(parts)
    if factors and check.baseline is not None:
        text += f" ({'/'.join(factors)} baseline {format_value(check.baseline, unit)})"
    return text


def judge(check: Check, value: float | None) -> tuple[Status, str | None]:
    """Compare a figure with the check's thresholds; return the status and the threshold crossed."""
    if value is None or math.isnan(value):
        return "ok", None
    above = check.direction == "above"
    for level in ("critical", "warn"):
        threshold = check.threshold(level)
        if threshold is not None and (value > threshold if above else value < threshold):
            return level, level
    return "ok", None


def unit_of(check: Check) -> Unit:
    """Return the unit a check's figure and thresholds are written in."""
    if isinstance(check, PromqlCheck):
        return check.unit
    if isinstance(check, (PostgresConnectionsCheck, RedisMemoryCheck, RedisClientsCheck, DiskCheck)):
        return "percent"
    if isinstance(check, ContainersCheck):
        return "percent" if check.measure in {"cpu", "memory"} else "count"
    if isinstance(check, StorageCheck):
        return "percent" if check.capacity_bytes else "bytes"
    if isinstance(check, PostgresSizeCheck):
        return "bytes"
    if isinstance(check, ClockCheck):
        return "seconds"
    return "count"


def headline(check: Check, measured: Measurement, status: Status, crossed: str | None) -> str:
    """Write a finding's one line: the figure, the threshold it crossed or why, and the detail."""
    if status == "unknown":
        return f"{measured.figure}: {measured.reason}" if measured.reason else measured.figure
    text = measured.figure
    if crossed is not None:
        threshold = check.threshold(crossed)  # type: ignore[arg-type]
        relation = "above" if check.direction == "above" else "below"
        text += f", {relation} the {crossed} threshold of {format_value(threshold, measured.unit)}"
    elif measured.reason:
        text += f": {measured.reason}"
    if measured.detail:
        text += f" — {measured.detail}"
    return text


def advice_for(check: Check, status: Status, advice: dict[str, AdviceShown]) -> list[AdviceShown]:
    """Return the runbook's next steps for a check that is not ok (its own for unknown, if it has)."""
    if status == "ok":
        return []
    keys = check.unknown_advice if status == "unknown" and check.unknown_advice is not None else check.advice
    return [advice[key] for key in keys if key in advice]


def advice_of(checklist: Checklist) -> dict[str, AdviceShown]:
    """Return the checklist's advice as shown in findings."""
    return {
        key: AdviceShown(title=item.title, source=item.source, steps=list(item.steps))
        for key, item in checklist.advice.items()
    }


def overall(findings: Sequence[Finding]) -> Status:
    """Return the worst status among the findings (ok when there are none)."""
    return min((finding.status for finding in findings), key=STATUS_ORDER.__getitem__, default="ok")
