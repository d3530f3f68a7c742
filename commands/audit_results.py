"""What `/audit` answers: a form's report, an export's summary, or why audit_log could not be read."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adapters.base import Reason
from commands.audit_request import ExportFormat, Form
from commands.base import CommandResult, Model


class AuditRow(Model):
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


Estimable = Literal["events", "distinct_ips", "distinct_users"]


class Totals(Model):
    """Counts over every matching row, not only the rows shown (users: ids, else usernames).

    From a sample, `estimated` names the counts that are estimates (shown with ≈) and `at_least`
    the distinct counts that are only what the sample saw: lower bounds (shown with ≥), where too
    many values were seen once to extrapolate honestly. Others are exact; first and last seen are
    always exact.
    """

    events: int
    first_seen: datetime | None
    last_seen: datetime | None
    distinct_ips: int
    distinct_users: int
    estimated: list[Estimable] = Field(default_factory=list)
    at_least: list[Estimable] = Field(default_factory=list)
    # What distinct_users counts: users (ids, else usernames), or usernames (failed-logins, as the
    # runbook groups them: most names tried in an attack are no account).
    users_are: Literal["users", "usernames"] = "users"


class Group(Model):
    """One line of a breakdown (by action, by IP, by user ...)."""

    key: list[str]
    events: int
    distinct_ips: int
    distinct_users: int
    first_seen: datetime
    last_seen: datetime
    ips: list[str] = Field(default_factory=list)
    # In an estimated breakdown: the distinct counts that are lower bounds (≥) rather than ≈.
    at_least: list[Estimable] = Field(default_factory=list)


class Breakdown(Model):
    """Counts grouped by one or more columns.

    When `estimated`, every figure of it (events, users, IPs, first and last seen, the number of
    groups, and which groups are the largest) comes from a sample of the matching rows: ≈, or ≥
    where a group's `at_least` (or `total_groups_at_least`) says the figure is a lower bound.
    """

    title: str
    columns: list[str]
    groups: list[Group]
    total_groups: int
    estimated: bool = False
    # The number of groups is a lower bound (the groups the sample saw), not an estimate.
    total_groups_at_least: bool = False


class Estimate(Model):
    """The sample behind the estimated figures of a report."""

    sample_rows: int
    # Each matching row's chance of being in the sample (one in 1/fraction).
    fraction: float
    # How the sample was drawn: every row in evenly spaced slices of time of the window.
    method: str = "slices of time"


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
    # The number of rows left out is an estimate (it comes from the estimated total).
    omitted_estimated: bool = False
    export_arguments: str | None = None
    # Set when figures were estimated from a sample (they are marked ≈), None when all are exact.
    estimate: Estimate | None = None
    # Set when the form's reviewed index is not in place: its name (`/audit indexes` shows it).
    missing_index: str | None = None
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
