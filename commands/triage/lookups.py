"""Reading logs and audit rows for people: everything about one trace or request, and recent lines."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base import classify
from adapters.postgres import PostgresAdapter
from commands import logsearch
from commands.base import format_duration
from commands.formatting import elapsed_ms
from commands.triage.models import LogEntry, LogsReport, LookupReport, Scan, cut
from commands.triage.sources import need, utc_now
from commands.triage_grammar import LogsArgs, LookupArgs

LOOKUP_AUDIT_LIMIT = 200

# strpos, not LIKE: the id is literal text (its % and _ are no wildcards). PostgreSQL writes jsonb
# as text without escaping non-ASCII characters: the caller passes the id as that text holds it.
_AUDIT_LOOKUP_SQL = """
SELECT id, timestamp, action, username, user_id::text AS user_id, host(ip_address) AS ip,
       details::text AS details
FROM audit_log
WHERE strpos(details::text, $1) > 0
ORDER BY timestamp, id
LIMIT $2
"""


async def _audit_rows(database: PostgresAdapter | None, text: str, timeout: float) -> list[LogEntry]:
    database = need(database, "the platform database")
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
    return cut(" ".join(parts), 300)


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
    # The terminal may have begun this very search (bot/cli/main.py): the same files, the same texts.
    files = logsearch.expand(log_paths)
    spellings = args.needles()
    found, audit = await asyncio.gather(
        asyncio.to_thread(logsearch.search, files, spellings),
        asyncio.wait_for(_audit_rows(platform_db, spellings[0], timeout), timeout),
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
        duration_ms=elapsed_ms(min(started, found.started)),  # a scan begun earlier counts whole
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
