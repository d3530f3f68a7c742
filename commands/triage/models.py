"""What /triage returns: findings and their evidence, log entries, and the reports that carry them."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from commands.base import CommandResult, Model
from commands.changes import ChangesReport

Status = Literal["ok", "warn", "critical", "unknown"]
# Worst first: what needs a human now, then what could not be checked, then what is fine.
STATUS_ORDER: dict[str, int] = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}


def cut(text: str, limit: int) -> str:
    """Squeeze text onto one line of at most `limit` characters, ending in … when shortened."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Evidence(Model):
    """A small table behind a figure (top paths, slow queries, ...)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str | None = None


class AdviceShown(Model):
    """The runbook's next steps for a finding."""

    title: str
    source: str
    steps: list[str]


class Finding(Model):
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
    evidence: list[Evidence] = Field(default_factory=list)
    advice: list[AdviceShown] = Field(default_factory=list)


class TriageReport(CommandResult):
    """Every finding, worst first, and the overall status."""

    status: Status
    findings: list[Finding]
    window: str
    checked_at: datetime
    duration_ms: float
    checklist: str
    # For breached checks: when each crossed its threshold, and what changed just before.
    changes: ChangesReport | None = None

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


class LogEntry(Model):
    """A log line or an audit row, as found by a lookup."""

    time: datetime | None
    source: str
    level: str | None
    summary: str
    data: dict[str, Any]


class Scan(Model):
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
