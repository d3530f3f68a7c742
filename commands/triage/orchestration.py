"""Running the checklist: each check measured by its kind under its own timeout, judged, worst first."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from adapters.base import classify
from commands.base import format_duration
from commands.formatting import elapsed_ms
from commands.triage.checks_database import (
    measure_audit,
    measure_postgres_connections,
    measure_postgres_locks,
    measure_postgres_size,
    measure_postgres_slow_queries,
)
from commands.triage.checks_host import measure_clock, measure_containers, measure_disk
from commands.triage.checks_logs import measure_logs
from commands.triage.checks_prometheus import measure_promql
from commands.triage.checks_stores import measure_redis_clients, measure_redis_memory, measure_storage
from commands.triage.judging import advice_for, advice_of, headline, judge, overall, threshold_text, unit_of
from commands.triage.models import STATUS_ORDER, AdviceShown, Finding, Status, TriageReport
from commands.triage.sources import Measurement, TriageRun, TriageSources
from commands.triage_checklist import (
    AuditCheck,
    Check,
    Checklist,
    PostgresLocksCheck,
    PostgresSlowQueriesCheck,
)
from commands.triage_grammar import TriageArgs

_Measure = Callable[[Any, TriageRun], Awaitable[Measurement]]
# Each kind of check: the source it reads (shown in its finding) and the function that measures it.
_MEASURES: dict[str, tuple[str, _Measure]] = {
    "promql": ("prometheus", measure_promql),
    "postgres_connections": ("postgres", measure_postgres_connections),
    "postgres_slow_queries": ("postgres", measure_postgres_slow_queries),
    "postgres_locks": ("postgres", measure_postgres_locks),
    "postgres_size": ("postgres", measure_postgres_size),
    "redis_memory": ("redis", measure_redis_memory),
    "redis_clients": ("redis", measure_redis_clients),
    "storage": ("storage", measure_storage),
    "disk": ("disk", measure_disk),
    "containers": ("engine", measure_containers),
    "clock": ("clock", measure_clock),
    "logs": ("logs", measure_logs),
}


async def _measure(check: Check, run: TriageRun, timeout: float) -> Measurement:
    # The audit check passes the timeout on to each of its queries, so it is not in the table.
    if isinstance(check, AuditCheck):
        return await measure_audit(check, run, timeout)
    return await _MEASURES[check.kind][1](check, run)


def _source(check: Check) -> str:
    return "audit" if check.kind == "audit" else _MEASURES[check.kind][0]


async def run_check(check: Check, run: TriageRun, timeout: float, advice: dict[str, AdviceShown]) -> Finding:
    """Run one check within its timeout; any failure becomes an `unknown` finding with its reason."""
    started = time.perf_counter()
    threshold = threshold_text(check, unit_of(check))
    try:
        measured = await asyncio.wait_for(_measure(check, run, timeout), timeout=timeout)
    except Exception as error:  # a check never crashes the triage: it says why it could not look
        failure = classify(error)
        detail = failure.detail if failure.reason != "timeout" else f"no answer within {timeout:g} s"
        reason = f"{failure.reason}: {detail}"
        return Finding(
            id=check.id,
            title=check.title,
            source=_source(check),
            status="unknown",
            headline=f"could not check: {reason}",
            figure="—",
            value=None,
            threshold=threshold,
            reason=reason,
            duration_ms=elapsed_ms(started),
            timeout_seconds=timeout,
            advice=advice_for(check, "unknown", advice),
        )
    if measured.status is not None:
        status: Status = measured.status
        crossed = None
    else:
        status, crossed = judge(check, measured.value)
    return Finding(
        id=check.id,
        title=check.title,
        source=_source(check),
        status=status,
        headline=headline(check, measured, status, crossed),
        figure=measured.figure,
        value=measured.value if measured.value is not None and math.isfinite(measured.value) else None,
        threshold=threshold,
        reason=measured.reason,
        duration_ms=elapsed_ms(started),
        timeout_seconds=timeout,
        evidence=measured.evidence,
        advice=advice_for(check, status, advice),
    )


def check_timeout(check: Check, checklist: Checklist, default_timeout: float | None) -> float:
    """Return a check's time limit: its own, else the setting, else the checklist's default."""
    return check.timeout_seconds or default_timeout or checklist.timeout_seconds


def new_run(
    sources: TriageSources, checklist: Checklist, window: timedelta | None = None, at: datetime | None = None
) -> TriageRun:
    """Prepare one triage over `window` (default: the checklist's), evaluated at `at` (default: now)."""
    # Every PostgreSQL check shares one read of pg_stat_activity, made with the slow-query settings.
    slow = [check for check in checklist.enabled() if isinstance(check, PostgresSlowQueriesCheck)]
    slower_than = min((check.slower_than.total_seconds() for check in slow), default=1.0)
    show = max(
        (
            check.show
            for check in checklist.enabled()
            if isinstance(check, (PostgresSlowQueriesCheck, PostgresLocksCheck))
        ),
        default=10,
    )
    return TriageRun(sources, window or checklist.window, at, (slower_than, show))


async def run_triage(
    args: TriageArgs,
    sources: TriageSources,
    checklist: Checklist,
    *,
    checklist_path: str = "",
    default_timeout: float | None = None,
    at: datetime | None = None,
) -> TriageReport:
    """Run every enabled check of the checklist at once, each under its own timeout; worst first."""
    started = time.perf_counter()
    run = new_run(sources, checklist, args.window, at)
    advice = advice_of(checklist)
    checked_at = run.now
    checks = checklist.enabled()
    try:
        findings = await asyncio.gather(
            *(
                run_check(check, run, check_timeout(check, checklist, default_timeout), advice)
                for check in checks
            )
        )
    finally:
        run.close()
    order = {check.id: index for index, check in enumerate(checks)}
    findings.sort(key=lambda finding: (STATUS_ORDER[finding.status], order[finding.id]))
    return TriageReport(
        status=overall(findings),
        findings=findings,
        window=format_duration(run.window),
        checked_at=checked_at,
        duration_ms=elapsed_ms(started),
        checklist=checklist_path,
    )
