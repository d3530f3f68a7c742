"""The PromQL checks: one instant query, judged on its worst series, with an optional breakdown."""

from __future__ import annotations

import asyncio
import math

from adapters.base import classify
from adapters.prometheus import QueryResult
from commands.formatting import Unit, format_value
from commands.triage.models import Evidence
from commands.triage.sources import Measurement, TriageRun, need
from commands.triage_checklist import PromqlCheck, render_query


async def measure_promql(check: PromqlCheck, run: TriageRun) -> Measurement:
    """Query Prometheus (and the breakdown at the same time); the worst series is the figure."""
    prometheus = need(run.sources.prometheus, "Prometheus")
    at = run.at.timestamp() if run.at else None
    query = render_query(check.query, run.window)
    main_call = prometheus.query(query, at=at)
    evidence = [Evidence(title="Query", columns=["PromQL"], rows=[[query]])]
    if check.breakdown is not None:
        breakdown_query = render_query(check.breakdown.query, run.window)
        result, breakdown = await asyncio.gather(
            main_call, prometheus.query(breakdown_query, at=at), return_exceptions=True
        )
    else:
        result, breakdown = await main_call, None
    if isinstance(result, BaseException):
        raise result
    detail = ""
    if check.breakdown is not None:
        if isinstance(breakdown, BaseException):
            failure = classify(breakdown)
            evidence.append(
                Evidence(
                    title=check.breakdown.title, columns=[], rows=[], note=f"not available: {failure.detail}"
                )
            )
        elif isinstance(breakdown, QueryResult):
            rows = _breakdown_rows(
                breakdown, check.breakdown.label, check.breakdown.unit, check.breakdown.top
            )
            evidence.append(
                Evidence(
                    title=check.breakdown.title,
                    columns=[check.breakdown.label, "value"],
                    rows=rows,
                    note=None if rows else "nothing to show",
                )
            )
            if rows:
                detail = f"top {check.breakdown.label}: {rows[0][0]} ({rows[0][1]})"
    if result.warnings:
        evidence.append(
            Evidence(title="Prometheus warnings", columns=["warning"], rows=[[w] for w in result.warnings])
        )
    values = [sample.value for sample in result.samples]
    if not values:
        return Measurement(
            None,
            "no data",
            check.unit,
            evidence=evidence,
            status=check.if_empty,
            reason="the query matched no series (is the metric exported and scraped?)",
        )
    if len(values) > 1:
        rows = [[_labels(sample.labels), format_value(sample.value, check.unit)] for sample in result.samples]
        evidence.append(Evidence(title="Series", columns=["labels", "value"], rows=rows[:20]))
    real = [value for value in values if not math.isnan(value)]
    if not real:
        return Measurement(
            None,
            "NaN",
            check.unit,
            detail,
            evidence,
            status=check.if_nan,
            reason="Prometheus answered NaN (0/0: no requests in the window)",
        )
    value = max(real) if check.direction == "above" else min(real)
    return Measurement(value, format_value(value, check.unit), check.unit, detail, evidence)


def _breakdown_rows(result: QueryResult, label: str, unit: Unit, top: int) -> list[list[str]]:
    samples = [sample for sample in result.samples if not math.isnan(sample.value)]
    samples.sort(key=lambda sample: sample.value, reverse=True)
    return [[sample.labels.get(label, "—"), format_value(sample.value, unit)] for sample in samples[:top]]


def _labels(labels: dict[str, str]) -> str:
    shown = {key: value for key, value in labels.items() if key != "__name__"}
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(shown.items())) + "}"
