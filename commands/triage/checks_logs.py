"""The log check: error lines in the window, the paths that fail most, and the latest failures."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from commands import logsearch
from commands.base import format_duration
from commands.formatting import format_bytes
from commands.triage.models import Evidence, cut
from commands.triage.sources import Measurement, TriageRun
from commands.triage_checklist import LogsCheck


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


async def measure_logs(check: LogsCheck, run: TriageRun) -> Measurement:
    """Count the error lines of the window, with the paths failing most and the latest failures."""
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
        [path, str(count), cut(summary.last_error.get(path, ""), 100)]
        for path, count in summary.by_path.most_common(check.top)
    ]
    samples = [
        [
            record.time.strftime("%H:%M:%S") if record.time else "—",
            str(record.data.get("trace_id") or "—"),
            str(record.data.get("path") or "—"),
            str(record.data.get("status_code") or record.data.get("level") or "—"),
            cut(_error_text(record.data), 80),
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
