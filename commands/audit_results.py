"""What `/audit` answers: a form's report, an export's summary, or why audit_log could not be read."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from adapters.base import Reason
from commands.audit_request import ExportFormat, Form
from commands.base import CommandResult


class AuditRow(BaseModel):
    """One audit_log event as shown in a table."""

    id: int
    timestamp: datetime
    action: str
    user_id: uuid.UUID | None
    username: str | None
    ip_address: str | None
    outcome: str
    request_id: str | None
    details: dict[str, Any] | list[Any] | str | int | float | bool | None = None


class Totals(BaseModel):
    """Counts over every matching row, not only the rows shown (users: ids, else usernames)."""

    events: int
    first_seen: datetime | None
    last_seen: datetime | None
    distinct_ips: int
    distinct_users: int


class Group(BaseModel):
    """One line of a breakdown (by action, by IP, by user ...)."""

    key: list[str]
    events: int
    distinct_ips: int
    distinct_users: int
    first_seen: datetime
    last_seen: datetime
    ips: list[str] = Field(default_factory=list)


class Breakdown(BaseModel):
    """Counts grouped by one or more columns."""

    title: str
    columns: list[str]
    groups: list[Group]
    total_groups: int


class AuditReport(CommandResult):
    """What one investigation form found."""

    form: Form
    subject: str
    description: str
    note: str = ""
    since: str
    limit: int
    min_failures: int | None = None
    totals: Totals
    breakdowns: list[Breakdown]
    rows: list[AuditRow]
    omitted: int
    omitted_what: str = "rows"
    export_arguments: str | None = None
    database: str
    queried_at: datetime
    duration_ms: float


class AuditUnavailable(CommandResult):
    """The audit log could not be read: which database, and why."""

    database: str
    reason: Reason
    detail: str
    rows_written: int | None = None

    @property
    def ok(self) -> bool:
        """Return False: nothing was answered."""
        return False


class AuditExport(CommandResult):
    """An export that was written: how much, in what format, where."""

    format: ExportFormat
    description: str
    since: str
    rows: int
    size_bytes: int
    truncated: str | None = None
    # What the file changes for its readers' safety (CSV: cells that would be formulas are quoted).
    note: str | None = None
    destination: str
    filename: str
    database: str
    duration_ms: float
    rows_per_second: float
    # Where the file waits on disk until it is uploaded to Slack; never part of JSON output.
    spool: Path | None = Field(default=None, exclude=True, repr=False)
