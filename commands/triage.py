"""`/triage`: the runbook's diagnostic checklist run concurrently, and log lookups by trace, request or time.

The checks come from the declarative checklist (commands/triage_checks.yaml); each runs under its
own timeout and turns into a finding: ok, warn, critical, or unknown when its source did not answer.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from adapters.base import ClockReading, DependencyError, classify
from adapters.engine import ContainerStats, EngineAdapter
from adapters.postgres import Activity, PostgresAdapter
from adapters.prometheus import PrometheusAdapter, QueryResult
from adapters.redis_store import RedisAdapter
from adapters.storage import StorageAdapter
from commands import logsearch
from commands.base import (
    Arguments,
    CommandResult,
    UsageError,
    format_duration,
    parse_duration,
    parse_positive_int,
)
from commands.formatting import Unit, elapsed_ms, format_bytes, format_value
from commands.triage_checklist import (
    AuditCheck,
    Check,
    Checklist,
    ClockCheck,
    ContainersCheck,
    DiskCheck,
    LogsCheck,
    PostgresConnectionsCheck,
    PostgresLocksCheck,
    PostgresSizeCheck,
    PostgresSlowQueriesCheck,
    PromqlCheck,
    RedisClientsCheck,
    RedisMemoryCheck,
    StorageCheck,
    render_query,
)

USAGE = (
    "/triage [window=5m] | trace <trace_id> | request <request_id>"
    " | logs [level] [path] [since=15m] [limit=50]"
)

Status = Literal["ok", "warn", "critical", "unknown"]
# Worst first: what needs a human now, then what could not be checked, then what is fine.
STATUS_ORDER: dict[str, int] = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}

MIN_WINDOW = timedelta(seconds=10)
MAX_WINDOW = timedelta(hours=24)
MAX_LOGS_SINCE = timedelta(days=30)
DEFAULT_LOGS_SINCE = timedelta(minutes=15)
DEFAULT_LOGS_LIMIT = 50
MAX_LOGS_LIMIT = 500
LOOKUP_AUDIT_LIMIT = 200
QUERY_SHOWN = 80  # characters of a SQL query shown in a table cell

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$")

T = TypeVar("T")


# --- arguments ------------------------------------------------------------------------------


class TriageArgs(BaseModel):
    """Run every check; `window` overrides the checklist's rate window."""

    window: timedelta | None = None


class LookupArgs(BaseModel):
    """Find every log line and audit row of one trace or request."""

    kind: Literal["trace", "request"]
    id: str


class LogsArgs(BaseModel):
    """Recent log lines, filtered by minimum level and path prefix."""

    level: str | None = None
    path: str | None = None
    since: timedelta = DEFAULT_LOGS_SINCE
    limit: int = DEFAULT_LOGS_LIMIT


TriageCommand = TriageArgs | LookupArgs | LogsArgs


def parse(tokens: list[str]) -> TriageCommand:
    """Read `/triage` arguments; anything unexpected is a usage error naming it."""
    args = Arguments.parse(tokens, USAGE)
    sub = args.optional_positional()
    if sub is None:
        window = args.option("window", _window, None)
        args.done()
        return TriageArgs(window=window)
    lowered = sub.lower()
    if lowered == "trace":
        raw = args.next_positional("trace id")
        args.done()
        return LookupArgs(kind="trace", id=parse_trace_id(raw, USAGE))
    if lowered == "request":
        raw = args.next_positional("request id")
        args.done()
        return LookupArgs(kind="request", id=parse_request_id(raw, USAGE))
    if lowered == "logs":
        return _parse_logs(args)
    raise args.fail(f"unknown subcommand `{sub[:40]}` (use trace, request or logs)")


def _window(text: str) -> timedelta:
    window = parse_duration(text, maximum=MAX_WINDOW)
    if window < MIN_WINDOW:
        raise UsageError(f"`{text}` is shorter than the minimum of {format_duration(MIN_WINDOW)}")
    return window


def parse_trace_id(text: str, usage: str = USAGE) -> str:
    """Accept a W3C trace id (32 hex digits) or a whole traceparent header; return the trace id."""
    candidate = text.strip().lower()
    match = _TRACEPARENT.match(candidate)
    if match:
        candidate = match.group(1)
    if not _TRACE_ID.match(candidate) or set(candidate) == {"0"}:
        raise UsageError(
            f"`{text[:60]}` is not a trace id: expected 32 hexadecimal digits (a W3C trace-id, "
            "as in the logs' trace_id field), not all zero",
            usage,
        )
    return candidate


def parse_request_id(text: str, usage: str = USAGE) -> str:
    """Accept a request id as the platform writes it (X-Request-ID): 8 to 128 safe characters."""
    candidate = text.strip()
    if not _REQUEST_ID.match(candidate):
        raise UsageError(
            f"`{text[:60]}` is not a request id: expected 8 to 128 letters, digits, '-', '_', '.' or ':' "
            "(as in the logs' request_id field)",
            usage,
        )
    return candidate


def _parse_logs(args: Arguments) -> LogsArgs:
    level: str | None = None
    path: str | None = None
    while (token := args.optional_positional()) is not None:
        named = logsearch.level_name(token)
        if named is not None:
            if level is not None:
                raise args.fail(f"level given twice (`{level}` and `{token[:40]}`)")
            level = named
        elif token.startswith("/"):
            if path is not None:
                raise args.fail(f"path given twice (`{path}` and `{token[:40]}`)")
            if len(token) > 512 or any(char.isspace() for char in token):
                raise args.fail(f"`{token[:40]}` is not a path (no spaces, at most 512 characters)")
            path = token
        else:
            levels = ", ".join(logsearch.LEVELS)
            raise args.fail(f"`{token[:40]}` is neither a level ({levels}) nor a path (starting with /)")
    since = args.option(
        "since", lambda text: parse_duration(text, maximum=MAX_LOGS_SINCE), DEFAULT_LOGS_SINCE
    )
    limit = args.option("limit", lambda text: parse_positive_int(text, MAX_LOGS_LIMIT), DEFAULT_LOGS_LIMIT)
    args.done()
    return LogsArgs(level=level, path=path, since=since, limit=limit)


def _logs_since(text: str) -> timedelta:
    return parse_duration(text, maximum=MAX_LOGS_SINCE)


def _logs_limit(text: str) -> int:
    return parse_positive_int(text, MAX_LOGS_LIMIT)


def unparse(command: TriageCommand) -> list[str]:
    """Write arguments back as tokens that `parse` reads to the same arguments."""
    if isinstance(command, TriageArgs):
        return [] if command.window is None else [f"window={format_duration(command.window)}"]
    if isinstance(command, LookupArgs):
        return [command.kind, command.id]
    tokens = ["logs"]
    if command.level:
        tokens.append(command.level)
    if command.path:
        tokens.append(command.path)
    return [*tokens, f"since={format_duration(command.since)}", f"limit={command.limit}"]


# --- results --------------------------------------------------------------------------------


class Evidence(BaseModel):
    """A small table behind a figure (top paths, slow queries, ...)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str | None = None


class AdviceShown(BaseModel):
    """The runbook's next steps for a finding."""

    title: str
    source: str
    steps: list[str]


class Finding(BaseModel):
    """One check's verdict: status, the figure it saw, the threshold, evidence and next steps."""

    id: str
    title: str
    source: str
    status: Status
    headline: str
    figure: str
    value: float | None
    threshold: str
    reason: str | None = None
    duration_ms: float
    timeout_seconds: float
    evidence: list[Evidence] = []
    advice: list[AdviceShown] = []


class TriageReport(CommandResult):
    """Every finding, worst first, and the overall status."""

    status: Status
    findings: list[Finding]
    window: str
    checked_at: datetime
    duration_ms: float
    checklist: str

    @property
    def ok(self) -> bool:
        """Return whether every check came back ok."""
        return self.status == "ok"

    @property
    def slowest_ms(self) -> float:
        """Return the longest any one check took."""
        return max((finding.duration_ms for finding in self.findings), default=0.0)

    def counts(self) -> dict[str, int]:
        """Return how many findings have each status, worst first."""
        counted: Counter[str] = Counter(finding.status for finding in self.findings)
        return {status: counted[status] for status in STATUS_ORDER if counted[status]}


class LogEntry(BaseModel):
    """A log line or an audit row, as found by a lookup."""

    time: datetime | None
    source: str
    level: str | None
    summary: str
    data: dict[str, Any]


class Scan(BaseModel):
    """How much of the logs a lookup read and what it had to skip."""

    files: int
    files_skipped: int
    bytes_read: int
    non_json: int
    untimed: int
    errors: list[str]
    patterns: list[str]


class LookupReport(CommandResult):
    """Every log line and audit row of one trace or request, in time order."""

    kind: Literal["trace", "request"]
    id: str
    entries: list[LogEntry]
    log_lines: int
    audit_rows: int
    left_out: int
    scan: Scan
    audit_problem: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        """Return whether every source could be read (finding nothing is an answer too)."""
        return self.audit_problem is None and not self.scan.errors


class LogsReport(CommandResult):
    """Recent log lines matching the filters, newest first, with how many were left out."""

    level: str | None
    path: str | None
    since: str
    entries: list[LogEntry]
    matched: int
    left_out: int
    scan: Scan
    duration_ms: float

    @property
    def ok(self) -> bool:
        """Return whether every file could be read."""
        return not self.scan.errors


# --- sources --------------------------------------------------------------------------------


def utc_now() -> datetime:
    """Return the bot's clock."""
    return datetime.now(UTC)


@dataclass
class TriageSources:
    """The systems the checks read; a check whose source is None reports unknown."""

    prometheus: PrometheusAdapter | None
    platform_db: PostgresAdapter | None
    redis: RedisAdapter | None
    storage: StorageAdapter | None
    engine: EngineAdapter | None
    log_paths: list[str]
    backend_service: str = "backend"
    clock: Callable[[], datetime] = field(default=utc_now)


@dataclass
class Measurement:
    """What a check saw, before its thresholds judge it."""

    value: float | None
    figure: str
    unit: Unit = "count"
    detail: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    # Set when the figure alone decides (NaN, a missing bucket); None lets the thresholds judge.
    status: Status | None = None
    reason: str | None = None


class _Run:
    """One triage: the window, the evaluation time and the source reads that several checks share."""

    def __init__(
        self,
        sources: TriageSources,
        window: timedelta,
        at: datetime | None,
        activity_params: tuple[float, int] = (1.0, 10),
    ) -> None:
        self.sources = sources
        self.window = window
        self.at = at
        # (slower_than seconds, rows shown) for the one pg_stat_activity read the checks share.
        self.activity_params = activity_params
        self._shared: dict[Any, asyncio.Future[Any]] = {}

    @property
    def now(self) -> datetime:
        """Return the evaluation time (the bot's clock unless the caller fixed one)."""
        return self.at or self.sources.clock()

    async def shared(self, key: Any, factory: Callable[[], Awaitable[T]]) -> T:
        """Read a source once for every check that needs it; a check's timeout does not cancel it."""
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(factory())
            self._shared[key] = future
        result: T = await asyncio.shield(future)
        return result

    def close(self) -> None:
        """Cancel reads nobody waits for any more, and collect failures nobody looked at."""
        for future in self._shared.values():
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()


def _need(source: T | None, name: str) -> T:
    if source is None:
        raise DependencyError("error", f"{name} is not configured")
    return source


# --- formatting -----------------------------------------------------------------------------


def _threshold_text(check: Check, unit: Unit) -> str:
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


def _judge(check: Check, value: float | None) -> tuple[Status, str | None]:
    """Compare a figure with the check's thresholds; return the status and the threshold crossed."""
    if value is None or math.isnan(value):
        return "ok", None
    above = check.direction == "above"
    for level in ("critical", "warn"):
        threshold = check.threshold(level)
        if threshold is not None and (value > threshold if above else value < threshold):
            return level, level
    return "ok", None


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the checks -----------------------------------------------------------------------------


async def _promql(check: PromqlCheck, run: _Run) -> Measurement:
    prometheus = _need(run.sources.prometheus, "Prometheus")
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


async def _activity(run: _Run) -> Activity:
    database = _need(run.sources.platform_db, "the platform database")
    slower_than, show = run.activity_params
    return await run.shared(("activity", slower_than, show), lambda: database.activity(slower_than, show))


async def _postgres_connections(check: PostgresConnectionsCheck, run: _Run) -> Measurement:
    activity = await _activity(run)
    share = activity.connections / activity.max_connections if activity.max_connections else None
    rows = [[item["state"], item["datname"], str(item["count"])] for item in activity.by_state]
    return Measurement(
        share,
        f"{activity.connections} of {activity.max_connections} ({format_value(share, 'percent')})",
        "percent",
        f"{activity.reserved_connections} reserved for superusers",
        [Evidence(title="Client connections by state", columns=["state", "database", "count"], rows=rows)],
    )


async def _postgres_slow(check: PostgresSlowQueriesCheck, run: _Run) -> Measurement:
    activity = await _activity(run)
    slower_than = check.slower_than.total_seconds()
    slow = [item for item in activity.slow_queries if float(item["seconds"] or 0) > slower_than]
    count = activity.slow_count if slower_than == run.activity_params[0] else len(slow)
    rows = [
        [
            str(item["pid"]),
            format_value(float(item["seconds"]), "seconds"),
            item["datname"],
            item["usename"],
            item["wait_event"] or "—",
            _cut(item["query"], QUERY_SHOWN),
        ]
        for item in slow[: check.show]
    ]
    detail = ""
    if slow:
        longest = slow[0]
        detail = f"longest {format_value(float(longest['seconds']), 'seconds')} (pid {longest['pid']})"
    evidence = [
        Evidence(
            title=f"Queries active for more than {format_value(slower_than, 'seconds')}",
            columns=["pid", "running", "database", "user", "waiting on", "query"],
            rows=rows,
            note=None if rows else "none",
        )
    ]
    return Measurement(count, f"{count} quer{'y' if count == 1 else 'ies'}", "count", detail, evidence)


async def _postgres_locks(check: PostgresLocksCheck, run: _Run) -> Measurement:
    activity = await _activity(run)
    rows = [
        [
            str(item["pid"]),
            item["locktype"],
            item["mode"],
            item["relation"] or "—",
            format_value(item["seconds"], "seconds") if item["seconds"] is not None else "—",
            ", ".join(str(pid) for pid in item["blocked_by"] or []) or "—",
            _cut(item["query"], QUERY_SHOWN),
        ]
        for item in activity.waiting_locks[: check.show]
    ]
    count = activity.waiting_count
    detail = ""
    if activity.waiting_locks:
        first = activity.waiting_locks[0]
        blockers = ", ".join(str(pid) for pid in first["blocked_by"] or []) or "?"
        detail = f"pid {first['pid']} waits for {first['mode']} held by pid {blockers}"
    evidence = [
        Evidence(
            title="Locks not granted",
            columns=["pid", "lock type", "mode", "relation", "waiting", "blocked by", "query"],
            rows=rows,
            note=None if rows else "none",
        )
    ]
    return Measurement(count, f"{count} waiting", "count", detail, evidence)


async def _postgres_size(check: PostgresSizeCheck, run: _Run) -> Measurement:
    activity = await _activity(run)
    return Measurement(
        float(activity.database_bytes),
        format_bytes(activity.database_bytes),
        "bytes",
        f"database {activity.database}",
    )


async def _redis_info(run: _Run) -> dict[str, Any]:
    redis = _need(run.sources.redis, "Redis")
    return await run.shared("redis-info", redis.info_snapshot)


async def _redis_memory(check: RedisMemoryCheck, run: _Run) -> Measurement:
    info = await _redis_info(run)
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0) or 0)
    rows = [
        [key, str(info[key])]
        for key in (
            "used_memory_human",
            "used_memory_rss_human",
            "used_memory_peak_human",
            "maxmemory_human",
            "maxmemory_policy",
            "mem_fragmentation_ratio",
            "evicted_keys",
        )
        if key in info
    ]
    evidence = [Evidence(title="INFO memory", columns=["field", "value"], rows=rows)]
    if not limit:
        return Measurement(
            None, f"{format_bytes(used)} used, no maxmemory (unlimited)", "bytes", evidence=evidence
        )
    share = used / limit
    return Measurement(
        share,
        f"{format_bytes(used)} of {format_bytes(limit)} ({format_value(share, 'percent')})",
        "percent",
        f"policy {info.get('maxmemory_policy', '?')}",
        evidence,
    )


async def _redis_clients(check: RedisClientsCheck, run: _Run) -> Measurement:
    info = await _redis_info(run)
    clients = int(info.get("connected_clients", 0))
    limit = int(info.get("maxclients", 0) or 0)
    rows = [
        [key, str(info[key])]
        for key in ("connected_clients", "maxclients", "blocked_clients", "rejected_connections")
        if key in info
    ]
    evidence = [Evidence(title="INFO clients", columns=["field", "value"], rows=rows)]
    share = clients / limit if limit else None
    figure = f"{clients} of {limit}" if limit else f"{clients} connected"
    blocked = int(info.get("blocked_clients", 0))
    detail = f"{blocked} blocked" if blocked else ""
    return Measurement(share, figure, "percent", detail, evidence)


async def _storage(check: StorageCheck, run: _Run) -> Measurement:
    storage = _need(run.sources.storage, "object storage")
    try:
        usage = await storage.usage(check.max_objects)
    except DependencyError as error:
        if error.reason == "not found":
            # The storage answered: the platform's bucket is gone. That is a finding, not a blind spot.
            return Measurement(None, "bucket missing", status="critical", reason=error.detail)
        raise
    counted = f"{usage.objects} objects, {format_bytes(usage.bytes)}"
    if not usage.complete:
        counted = f"at least {counted} (counted the first {check.max_objects})"
    evidence = [
        Evidence(
            title=f"Bucket {usage.bucket}",
            columns=["objects", "bytes", "complete"],
            rows=[[str(usage.objects), format_bytes(usage.bytes), "yes" if usage.complete else "no"]],
        )
    ]
    if check.capacity_bytes:
        share = usage.bytes / check.capacity_bytes
        return Measurement(
            share, f"{counted} of {format_bytes(check.capacity_bytes)}", "percent", "reachable", evidence
        )
    return Measurement(None, counted, "bytes", f"bucket {usage.bucket} reachable", evidence)


def _disk_paths(check: DiskCheck, run: _Run) -> list[str]:
    if check.paths:
        return check.paths
    # The directory part of each log glob, before its first wildcard.
    found = []
    for pattern in run.sources.log_paths:
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        found.append(os.path.dirname(fixed) or ".")
    return found


def _disk_usage(paths: Sequence[str]) -> list[tuple[str, int, int, int]]:
    seen: set[int] = set()
    found = []
    for path in paths:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        found.append((path, usage.total, usage.used, usage.free))
    return found


async def _disk(check: DiskCheck, run: _Run) -> Measurement:
    paths = _disk_paths(check, run)
    usages = await asyncio.to_thread(_disk_usage, paths)
    if not usages:
        return Measurement(
            None, "no path", status="unknown", reason=f"none of {', '.join(paths) or 'no paths'} exists here"
        )
    rows = [
        [path, format_value(used / total if total else 0, "percent"), format_bytes(free), format_bytes(total)]
        for path, total, used, free in usages
    ]
    worst = max(usages, key=lambda item: item[2] / item[1] if item[1] else 0)
    share = worst[2] / worst[1] if worst[1] else 0.0
    evidence = [Evidence(title="Filesystems", columns=["path", "used", "free", "size"], rows=rows)]
    return Measurement(
        share,
        f"{format_value(share, 'percent')} used",
        "percent",
        f"{format_bytes(worst[3])} free on {worst[0]}",
        evidence,
    )


async def _containers(check: ContainersCheck, run: _Run) -> Measurement:
    engine = _need(run.sources.engine, "the container engine")
    stats: list[ContainerStats] = await run.shared(
        ("engine-stats", check.sample_seconds), lambda: engine.platform_stats(check.sample_seconds)
    )
    evidence = [_containers_table(stats)]
    project = engine.compose_project
    if not stats:
        return Measurement(
            None,
            "no containers",
            status="critical" if check.measure == "running" else "unknown",
            reason=f"the engine runs no container of Compose project {project}",
        )
    if check.measure == "running":
        down = [item for item in stats if item.status != "running"]
        detail = ", ".join(f"{item.name} {item.status}" for item in down)
        return Measurement(
            float(len(down)), f"{len(stats) - len(down)} of {len(stats)} running", "count", detail, evidence
        )
    if check.measure == "restarts":
        worst = max(stats, key=lambda item: item.restart_count)
        return Measurement(
            float(worst.restart_count),
            f"{worst.restart_count} restart{'s' if worst.restart_count != 1 else ''}",
            "count",
            f"most: {worst.name}" if worst.restart_count else "",
            evidence,
        )
    if check.measure == "version":
        backend = [item for item in stats if item.service == run.sources.backend_service]
        if not backend:
            return Measurement(
                None,
                "no backend",
                status="unknown",
                reason=f"no container of service {run.sources.backend_service} in project {project}",
                evidence=evidence,
            )
        versions = sorted({item.version or item.image for item in backend})
        images = ", ".join(sorted({item.image for item in backend}))
        return Measurement(None, ", ".join(versions), "count", f"image {images}", evidence)
    if check.measure == "cpu":
        measured = [item for item in stats if item.cpu_percent is not None]
        if not measured:
            return Measurement(
                None, "not measured", status="unknown", reason="no running container", evidence=evidence
            )
        worst = max(measured, key=lambda item: item.cpu_percent or 0.0)
        share = (worst.cpu_percent or 0.0) / 100
        return Measurement(
            share, f"{format_value(share, 'percent')} of a core", "percent", worst.name, evidence
        )
    measured = [item for item in stats if item.memory_bytes is not None and item.memory_limit_bytes]
    if not measured:
        return Measurement(
            None, "not measured", status="unknown", reason="no running container", evidence=evidence
        )
    worst = max(measured, key=lambda item: (item.memory_bytes or 0) / (item.memory_limit_bytes or 1))
    share = (worst.memory_bytes or 0) / (worst.memory_limit_bytes or 1)
    return Measurement(
        share,
        f"{format_bytes(worst.memory_bytes or 0)} of {format_bytes(worst.memory_limit_bytes or 0)}",
        "percent",
        worst.name,
        evidence,
    )


def _containers_table(stats: list[ContainerStats]) -> Evidence:
    rows = [
        [
            item.name,
            item.service or "—",
            item.status,
            format_value(item.cpu_percent / 100, "percent") if item.cpu_percent is not None else "—",
            format_bytes(item.memory_bytes) if item.memory_bytes is not None else "—",
            str(item.restart_count),
            item.image,
        ]
        for item in stats
    ]
    return Evidence(
        title="Platform containers",
        columns=["container", "service", "state", "CPU (of a core)", "memory", "restarts", "image"],
        rows=rows,
    )


async def _clock(check: ClockCheck, run: _Run) -> Measurement:
    readers: list[tuple[str, Awaitable[ClockReading]]] = []
    if run.sources.platform_db is not None:
        readers.append(("PostgreSQL now()", run.sources.platform_db.server_clock(run.sources.clock)))
    if run.sources.redis is not None:
        readers.append(("Redis TIME", run.sources.redis.server_clock(run.sources.clock)))
    if not readers:
        raise DependencyError("error", "neither PostgreSQL nor Redis is configured")
    answers = await asyncio.gather(*(reader for _, reader in readers), return_exceptions=True)
    rows = []
    skews: list[tuple[str, float]] = []
    failures = []
    for (name, _), answer in zip(readers, answers, strict=True):
        if isinstance(answer, BaseException):
            failure = classify(answer)
            failures.append((name, failure))
            rows.append([name, "—", "—", f"{failure.reason}: {failure.detail}"])
            continue
        middle = answer.sent + (answer.received - answer.sent) / 2
        skew = (answer.server - middle).total_seconds()
        uncertainty = (answer.received - answer.sent).total_seconds() / 2
        skews.append((name, skew))
        rows.append([name, f"{skew:+.3f} s", f"±{uncertainty:.3f} s", "answered"])
    evidence = [
        Evidence(
            title="Server clock minus the bot's clock",
            columns=["source", "skew", "uncertainty", "state"],
            rows=rows,
            note="A skew makes TOTP codes fail (runbook: MFA codes not working).",
        )
    ]
    if not skews:
        raise failures[0][1]
    name, worst = max(skews, key=lambda item: abs(item[1]))
    detail = f"{name} {worst:+.3f} s"
    if failures:
        detail += "; " + ", ".join(f"{failed} unreachable" for failed, _ in failures)
    return Measurement(abs(worst), f"{abs(worst):.3f} s", "seconds", detail, evidence)


def _is_error(record: dict[str, Any]) -> bool:
    level = logsearch.level_name(record.get("level"))
    if level is not None and logsearch.LEVELS[level] >= logsearch.LEVELS["error"]:
        return True
    status = record.get("status_code", record.get("status"))
    return isinstance(status, int) and not isinstance(status, bool) and status >= 500


def _error_text(record: dict[str, Any]) -> str:
    """Say what went wrong in a log record: its error, else its status, else its event."""
    if record.get("error"):
        return str(record["error"])
    status = record.get("status_code", record.get("status"))
    if status is not None:
        return f"status {status}"
    return str(record.get("event") or record.get("message") or "")


@dataclass
class _LogSummary:
    errors: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    last_error: dict[str, str] = field(default_factory=dict)
    samples: list[logsearch.Record] = field(default_factory=list)
    stats: logsearch.ScanStats = field(default_factory=logsearch.ScanStats)
    files: int = 0


def _summarise_logs(patterns: list[str], since: datetime, until: datetime, keep: int) -> _LogSummary:
    summary = _LogSummary()
    files = logsearch.expand(patterns)
    summary.files = len(files)
    errors = (
        record
        for record in logsearch.window_records(files, since, summary.stats, until=until)
        if _is_error(record.data)
    )
    for record in errors:
        summary.errors += 1
        path = str(record.data.get("path") or "—")
        summary.by_path[path] += 1
        summary.last_error[path] = _error_text(record.data)
        summary.samples.append(record)
        if len(summary.samples) > keep:
            summary.samples.pop(0)
    return summary


async def _logs(check: LogsCheck, run: _Run) -> Measurement:
    span = check.since or run.window
    until = run.now
    summary = await asyncio.to_thread(
        _summarise_logs, run.sources.log_paths, until - span, until + timedelta(seconds=1), check.samples
    )
    patterns = ", ".join(run.sources.log_paths) or "(none)"
    if summary.files == 0:
        return Measurement(
            None, "no log files", status="unknown", reason=f"no file matches CHATOPS_LOG_PATHS ({patterns})"
        )
    if summary.stats.errors and len(summary.stats.errors) >= summary.stats.files:
        return Measurement(
            None,
            "unreadable",
            status="unknown",
            reason=f"no log file could be read: {summary.stats.errors[0]}",
        )
    top = [
        [path, str(count), _cut(summary.last_error.get(path, ""), 100)]
        for path, count in summary.by_path.most_common(check.top)
    ]
    samples = [
        [
            record.time.strftime("%H:%M:%S") if record.time else "—",
            str(record.data.get("trace_id") or "—"),
            str(record.data.get("path") or "—"),
            str(record.data.get("status_code") or record.data.get("level") or "—"),
            _cut(_error_text(record.data), 80),
        ]
        for record in reversed(summary.samples)
    ]
    stats = summary.stats
    note = (
        f"{stats.files} file(s) read ({format_bytes(stats.bytes_read)}), {stats.files_skipped} older than"
        f" the window not opened; {stats.non_json} non-JSON line(s) and {stats.untimed} without a"
        " timestamp skipped"
    )
    if stats.errors:
        note += "; unreadable: " + "; ".join(stats.errors[:3])
    evidence = [
        Evidence(title="Failing paths", columns=["path", "errors", "last error"], rows=top, note=note),
        Evidence(
            title="Recent failing requests",
            columns=["time", "trace_id", "path", "status", "error"],
            rows=samples,
        ),
    ]
    detail = f"top path {top[0][0]} ({top[0][1]})" if top else ""
    window_text = format_duration(span)
    return Measurement(
        float(summary.errors),
        f"{summary.errors} error lines in the last {window_text}",
        "count",
        detail,
        evidence,
    )


_AUDIT_BREAKDOWN_SQL = """
WITH events AS (
    SELECT CASE WHEN action = 'LOGIN' THEN 'LOGIN (failed)' ELSE action END AS action,
           coalesce(username, user_id::text, '?') AS who,
           coalesce(host(ip_address), '?') AS ip
    FROM audit_log
    WHERE timestamp > now() - $1::interval
      AND action = ANY($2::text[])
      AND (action <> 'LOGIN' OR details->>'success' = 'false')
)
SELECT action, 'total' AS dimension, '' AS key, count(*) AS n FROM events GROUP BY action
UNION ALL
SELECT action, 'user', who, n FROM (
    SELECT action, who, count(*) AS n,
           row_number() OVER (PARTITION BY action ORDER BY count(*) DESC, who) AS rank
    FROM events GROUP BY action, who
) users WHERE rank <= $3
UNION ALL
SELECT action, 'ip', ip, n FROM (
    SELECT action, ip, count(*) AS n,
           row_number() OVER (PARTITION BY action ORDER BY count(*) DESC, ip) AS rank
    FROM events GROUP BY action, ip
) ips WHERE rank <= $3
"""

# The runbook's "Padrões de Falha de Login" query, without its HAVING so the worst shows anyway.
_FAILED_LOGINS_SQL = """
SELECT coalesce(username, user_id::text, '?') AS who, count(*) AS failures,
       array_agg(DISTINCT host(ip_address)) FILTER (WHERE ip_address IS NOT NULL) AS ips
FROM audit_log
WHERE action = 'LOGIN' AND details->>'success' = 'false' AND timestamp > now() - $1::interval
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2
"""


async def _audit(check: AuditCheck, run: _Run, timeout: float) -> Measurement:
    database = _need(run.sources.platform_db, "the platform database")
    async with database.connection() as conn:
        breakdown = await conn.fetch(
            _AUDIT_BREAKDOWN_SQL, check.since, check.actions, check.top, timeout=timeout
        )
        failed = await conn.fetch(_FAILED_LOGINS_SQL, check.since, check.top, timeout=timeout)
    totals: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    ips: dict[str, list[str]] = {}
    for row in breakdown:
        action, dimension, key, count = row["action"], row["dimension"], row["key"], int(row["n"])
        if dimension == "total":
            totals[action] = count
        else:
            (users if dimension == "user" else ips).setdefault(action, []).append(f"{key} ({count})")
    rows = [
        [action, str(count), ", ".join(users.get(action, [])), ", ".join(ips.get(action, []))]
        for action, count in sorted(totals.items(), key=lambda item: -item[1])
    ]
    since_text = format_duration(check.since)
    evidence = [
        Evidence(
            title=f"Security events in the last {since_text}",
            columns=["action", "events", "top users", "top IPs"],
            rows=rows,
            note=None if rows else "none",
        ),
        Evidence(
            title="Failed logins per user",
            columns=["user", "failed logins", "IPs"],
            rows=[[row["who"], str(row["failures"]), ", ".join(row["ips"] or [])] for row in failed],
            note=None if failed else "none",
        ),
    ]
    worst = int(failed[0]["failures"]) if failed else 0
    total = sum(totals.values())
    detail = f"{total} security events"
    if failed:
        ip_count = len(failed[0]["ips"] or [])
        detail = f"{failed[0]['who']} from {ip_count} IP{'s' if ip_count != 1 else ''}; {detail}"
    return Measurement(
        float(worst),
        f"{worst} failed logins for one user",
        "count",
        detail,
        evidence,
    )


_Runner = Callable[[Any, _Run], Awaitable[Measurement]]
_RUNNERS: dict[str, tuple[str, _Runner]] = {
    "promql": ("prometheus", _promql),
    "postgres_connections": ("postgres", _postgres_connections),
    "postgres_slow_queries": ("postgres", _postgres_slow),
    "postgres_locks": ("postgres", _postgres_locks),
    "postgres_size": ("postgres", _postgres_size),
    "redis_memory": ("redis", _redis_memory),
    "redis_clients": ("redis", _redis_clients),
    "storage": ("storage", _storage),
    "disk": ("disk", _disk),
    "containers": ("engine", _containers),
    "clock": ("clock", _clock),
    "logs": ("logs", _logs),
}


async def _measure(check: Check, run: _Run, timeout: float) -> Measurement:
    if isinstance(check, AuditCheck):
        return await _audit(check, run, timeout)
    return await _RUNNERS[check.kind][1](check, run)


def _source(check: Check) -> str:
    return "audit" if check.kind == "audit" else _RUNNERS[check.kind][0]


# --- running --------------------------------------------------------------------------------


async def run_check(check: Check, run: _Run, timeout: float, advice: dict[str, AdviceShown]) -> Finding:
    """Run one check within its timeout; any failure becomes an `unknown` finding with its reason."""
    started = time.perf_counter()
    threshold = _threshold_text(check, _unit_of(check))
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
            advice=_advice_for(check, "unknown", advice),
        )
    if measured.status is not None:
        status: Status = measured.status
        crossed = None
    else:
        status, crossed = _judge(check, measured.value)
    return Finding(
        id=check.id,
        title=check.title,
        source=_source(check),
        status=status,
        headline=_headline(check, measured, status, crossed),
        figure=measured.figure,
        value=measured.value if measured.value is not None and math.isfinite(measured.value) else None,
        threshold=threshold,
        reason=measured.reason,
        duration_ms=elapsed_ms(started),
        timeout_seconds=timeout,
        evidence=measured.evidence,
        advice=_advice_for(check, status, advice),
    )


def _unit_of(check: Check) -> Unit:
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


def _headline(check: Check, measured: Measurement, status: Status, crossed: str | None) -> str:
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


def _advice_for(check: Check, status: Status, advice: dict[str, AdviceShown]) -> list[AdviceShown]:
    if status == "ok":
        return []
    keys = check.unknown_advice if status == "unknown" and check.unknown_advice is not None else check.advice
    return [advice[key] for key in keys if key in advice]


def overall(findings: Sequence[Finding]) -> Status:
    """Return the worst status among the findings (ok when there are none)."""
    return min((finding.status for finding in findings), key=STATUS_ORDER.__getitem__, default="ok")


def check_timeout(check: Check, checklist: Checklist, default_timeout: float | None) -> float:
    """Return a check's time limit: its own, else the setting, else the checklist's default."""
    return check.timeout_seconds or default_timeout or checklist.timeout_seconds


def new_run(
    sources: TriageSources, checklist: Checklist, window: timedelta | None = None, at: datetime | None = None
) -> _Run:
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
    return _Run(sources, window or checklist.window, at, (slower_than, show))


def advice_of(checklist: Checklist) -> dict[str, AdviceShown]:
    """Return the checklist's advice as shown in findings."""
    return {
        key: AdviceShown(title=item.title, source=item.source, steps=list(item.steps))
        for key, item in checklist.advice.items()
    }


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


# --- lookups --------------------------------------------------------------------------------


_AUDIT_LOOKUP_SQL = """
SELECT id, timestamp, action, username, user_id::text AS user_id, host(ip_address) AS ip,
       details::text AS details
FROM audit_log
WHERE strpos(details::text, $1) > 0
ORDER BY timestamp, id
LIMIT $2
"""


async def _audit_rows(database: PostgresAdapter | None, text: str, timeout: float) -> list[LogEntry]:
    database = _need(database, "the platform database")
    async with database.connection() as conn:
        rows = await conn.fetch(_AUDIT_LOOKUP_SQL, text, LOOKUP_AUDIT_LIMIT, timeout=timeout)
    entries = []
    for row in rows:
        details = _json_object(row["details"])
        data = {
            "id": row["id"],
            "timestamp": row["timestamp"].isoformat(),
            "action": row["action"],
            "username": row["username"],
            "user_id": row["user_id"],
            "ip_address": row["ip"],
            "details": details,
        }
        outcome = " ".join(
            str(part)
            for part in (
                "failed" if details.get("success") is False else "",
                details.get("reason") or "",
                details.get("required_permission") or details.get("endpoint") or "",
            )
            if part
        )
        summary = f"{row['action']} {row['username'] or row['user_id'] or '?'} from {row['ip'] or '?'}"
        entries.append(
            LogEntry(
                time=row["timestamp"],
                source="audit_log",
                level=None,
                summary=f"{summary} {outcome}".strip(),
                data=data,
            )
        )
    return entries


def _json_object(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def describe_record(data: dict[str, Any]) -> str:
    """Write a log record as one line: the request it describes, or its event, and any error."""
    parts: list[str] = []
    if "method" in data or "path" in data:
        parts.append(f"{data.get('method', '')} {data.get('path', '')}".strip())
        if "status_code" in data:
            parts.append(f"→ {data['status_code']}")
        if "duration_ms" in data:
            parts.append(f"in {data['duration_ms']} ms")
    else:
        parts.append(str(data.get("event") or data.get("message") or data.get("msg") or "—"))
    if data.get("error"):
        parts.append(f"— {data['error']}")
    return _cut(" ".join(parts), 300)


def _entry(record: logsearch.Record) -> LogEntry:
    return LogEntry(
        time=record.time,
        source=Path(record.file).name,
        level=logsearch.level_name(record.data.get("level")),
        summary=describe_record(record.data),
        data=record.data,
    )


def _scan(stats: logsearch.ScanStats, patterns: list[str]) -> Scan:
    return Scan(
        files=stats.files,
        files_skipped=stats.files_skipped,
        bytes_read=stats.bytes_read,
        non_json=stats.non_json,
        untimed=stats.untimed,
        errors=stats.errors[:20],
        patterns=patterns,
    )


async def run_lookup(
    args: LookupArgs, log_paths: list[str], platform_db: PostgresAdapter | None, timeout: float
) -> LookupReport:
    """Find every log line and audit row mentioning the id, in time order, reading logs and DB at once."""
    started = time.perf_counter()
    files = logsearch.expand(log_paths)
    found, audit = await asyncio.gather(
        asyncio.to_thread(logsearch.search, files, args.id),
        asyncio.wait_for(_audit_rows(platform_db, args.id, timeout), timeout),
        return_exceptions=True,
    )
    if isinstance(found, BaseException):
        raise found
    audit_problem = None
    audit_entries: list[LogEntry] = []
    if isinstance(audit, BaseException):
        failure = classify(audit)
        detail = failure.detail if failure.reason != "timeout" else f"no answer within {timeout:g} s"
        audit_problem = f"{failure.reason}: {detail}"
    else:
        audit_entries = audit
    log_entries = [_entry(record) for record in found.records]
    entries = sorted(
        [*log_entries, *audit_entries],
        key=lambda entry: entry.time or datetime.max.replace(tzinfo=UTC),
    )
    return LookupReport(
        kind=args.kind,
        id=args.id,
        entries=entries,
        log_lines=len(log_entries),
        audit_rows=len(audit_entries),
        left_out=found.left_out,
        scan=_scan(found.stats, log_paths),
        audit_problem=audit_problem,
        duration_ms=elapsed_ms(started),
    )


def _matches(record: logsearch.Record, level: str | None, path: str | None) -> bool:
    if level is not None:
        seen = logsearch.level_name(record.data.get("level"))
        if seen is None or logsearch.LEVELS[seen] < logsearch.LEVELS[level]:
            return False
    if path is not None:
        value = record.data.get("path")
        if not isinstance(value, str) or not value.startswith(path):
            return False
    return True


def _recent(
    patterns: list[str], since: datetime, level: str | None, path: str | None, limit: int
) -> tuple[list[logsearch.Record], int, logsearch.ScanStats]:
    stats = logsearch.ScanStats()
    files = logsearch.expand(patterns)
    records = (
        record for record in logsearch.window_records(files, since, stats) if _matches(record, level, path)
    )
    kept, total = logsearch.newest(records, limit)
    return kept, total, stats


async def run_logs(args: LogsArgs, log_paths: list[str], now: datetime | None = None) -> LogsReport:
    """Return the newest log lines of the window matching the level and path, and how many were left out."""
    started = time.perf_counter()
    since = (now or utc_now()) - args.since
    kept, total, stats = await asyncio.to_thread(_recent, log_paths, since, args.level, args.path, args.limit)
    return LogsReport(
        level=args.level,
        path=args.path,
        since=format_duration(args.since),
        entries=[_entry(record) for record in kept],
        matched=total,
        left_out=total - len(kept),
        scan=_scan(stats, log_paths),
        duration_ms=elapsed_ms(started),
    )


async def run(
    command: TriageCommand,
    sources: TriageSources,
    checklist: Checklist,
    *,
    checklist_path: str = "",
    default_timeout: float | None = None,
    lookup_timeout: float = 10.0,
) -> CommandResult:
    """Run whichever form of /triage was asked for."""
    if isinstance(command, LookupArgs):
        return await run_lookup(command, sources.log_paths, sources.platform_db, lookup_timeout)
    if isinstance(command, LogsArgs):
        return await run_logs(command, sources.log_paths, sources.clock())
    return await run_triage(
        command, sources, checklist, checklist_path=checklist_path, default_timeout=default_timeout
    )
