"""`/audit`: the runbook's audit-log investigations as read-only, parameterized, indexed queries."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncpg
from pydantic import BaseModel, Field

from adapters.base import Reason, classify
from commands.base import (
    Arguments,
    CommandResult,
    UsageError,
    format_duration,
    parse_duration,
    parse_positive_int,
)

USAGE = (
    "/audit user <id|username> | ip <address|CIDR> | request <request id> | failed-logins [min=5]"
    " | mfa | security   [since=24h] [limit=20]\n"
    "/audit export csv|json [user <x> | ip <x> | request <x> | failed-logins | mfa | security]"
    " [user=…] [ip=…] [request=…] [action=A,B] [since=7d] [limit=N] [output=FILE (terminal)]\n"
    "/audit indexes"
)

Form = Literal["user", "ip", "request", "failed-logins", "mfa", "security"]
FORMS: tuple[Form, ...] = ("user", "ip", "request", "failed-logins", "mfa", "security")
ExportFormat = Literal["csv", "json"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The runbook's "security events" (Triagem Inicial, item 5) and its MFA query.
SECURITY_ACTIONS = ("LOGIN", "MFA_CHALLENGE_FAILED", "RATE_LIMIT_EXCEEDED", "PERMISSION_DENIED")
MFA_ACTIONS = ("MFA_CHALLENGE_FAILED",)
DEFAULT_SINCE = timedelta(hours=24)
DEFAULT_EXPORT_SINCE = timedelta(days=7)
DEFAULT_MIN_FAILURES = 5
# Longer text than this is refused before any query: it cannot be a username, and 16 kB still
# covers anything hostile a slash command can carry.
MAX_TEXT = 16_384
BREAKDOWN_LIMIT = 15
# Leaves room for the statement timeout to fire on the server before the client gives up.
CLIENT_TIMEOUT_MARGIN = 2.0

_UUID_SHAPE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_UUID_LOOKALIKE = re.compile(r"[0-9a-fA-F-]{20,45}")
_ACTION = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_OPTION_NAMES = ("since", "limit", "min", "output", "user", "ip", "request", "action")
KNOWN_OPTION = re.compile(r"^(?:--)?(?:" + "|".join(_OPTION_NAMES) + r")=", re.IGNORECASE)
# Outcome of an event as the runbook reads it: details.success (LOGIN) and details.reason.
_OUTCOME = (
    "concat_ws(' ', CASE details->>'success' WHEN 'false' THEN 'failed' WHEN 'true' THEN 'ok' END,"
    " details->>'reason')"
)
# Kept literal (not parameters) so that the planner can match the partial index of audit_indexes.sql.
_FAILED_LOGIN = "action = 'LOGIN' AND details->>'success' = 'false'"


# ---------------------------------------------------------------- arguments


@dataclass(frozen=True)
class Limits:
    """Bounds from the settings that a request is checked against."""

    default_limit: int = 20
    max_limit: int = 200
    max_window: timedelta = timedelta(days=30)
    export_max_rows: int = 1_000_000


class AuditFilter(BaseModel):
    """Which audit_log rows a request is about (all conditions hold together)."""

    user_id: uuid.UUID | None = None
    username: str | None = None
    network: Network | None = None
    request_ids: list[str] | None = None
    actions: list[str] | None = None
    failed_logins: bool = False

    def describe(self) -> str:
        """Name the filter in a few words for titles."""
        parts = []
        if self.user_id is not None:
            parts.append(f"user {self.user_id}")
        if self.username is not None:
            parts.append(f"user {_clip(self.username, 60)}")
        if self.network is not None:
            parts.append(f"ip {_network_text(self.network)}")
        if self.request_ids:
            parts.append(f"request {self.request_ids[0]}")
        if self.failed_logins:
            parts.append("failed logins")
        if self.actions:
            parts.append("action " + ",".join(self.actions))
        return ", ".join(parts) or "all events"


class AuditQuery(BaseModel):
    """One investigation form with its subject, window and limit."""

    form: Form
    subject: str = ""
    filter: AuditFilter
    since: timedelta = DEFAULT_SINCE
    limit: int = 20
    min_failures: int = DEFAULT_MIN_FAILURES
    note: str = ""

    def export_arguments(self, fmt: ExportFormat = "csv") -> str:
        """Write the `/audit export` arguments that fetch every row this query counted."""
        words = ["export", fmt, self.form]
        if self.subject.startswith("-"):
            # As an option, a subject like `-o` cannot be read as the terminal's `-o FILE`.
            words[-1] = shlex.quote(f"{self.form}={self.subject}")
        elif self.subject:
            words.append(shlex.quote(self.subject))
        words.append(f"since={format_duration(self.since)}")
        return " ".join(words)


class ExportRequest(BaseModel):
    """`/audit export`: every matching row as CSV or JSON."""

    format: ExportFormat
    form: Form | None = None
    filter: AuditFilter
    since: timedelta = DEFAULT_EXPORT_SINCE
    limit: int
    output: str | None = None

    def describe(self) -> str:
        """Name what is exported: the form when it is only a form, else the filter."""
        if (
            self.form in ("failed-logins", "mfa", "security")
            and self.filter == _form_filter(self.form, "")[0]
        ):
            return self.form
        return self.filter.describe()


class IndexesRequest(BaseModel):
    """`/audit indexes`: print the shipped index file."""


AuditRequest = AuditQuery | ExportRequest | IndexesRequest


def parse(tokens: list[str], limits: Limits = Limits()) -> AuditRequest:
    """Read `/audit` arguments; anything malformed is refused here, before any query runs."""
    if not tokens:
        raise UsageError("say what to look at: " + ", ".join(FORMS) + ", export or indexes", USAGE)
    head, rest = tokens[0].lower(), list(tokens[1:])
    if head == "indexes":
        Arguments.parse(rest, USAGE).done()
        return IndexesRequest()
    if head == "export":
        return _parse_export(rest, limits)
    form = _form(head)
    subject, rest = _take_subject(form, rest)
    args = Arguments.parse(rest, USAGE)
    since = args.option("since", lambda text: parse_duration(text, limits.max_window), DEFAULT_SINCE)
    limit = args.option(
        "limit", lambda text: parse_positive_int(text, limits.max_limit), limits.default_limit
    )
    min_failures = DEFAULT_MIN_FAILURES
    if form == "failed-logins":
        min_failures = args.option("min", _parse_min, DEFAULT_MIN_FAILURES)
    args.done()
    query_filter, note = _form_filter(form, subject)
    return AuditQuery(
        form=form,
        subject=subject,
        filter=query_filter,
        since=since,
        limit=limit,
        min_failures=min_failures,
        note=note,
    )


def _parse_export(tokens: list[str], limits: Limits) -> ExportRequest:
    tokens = _join_output_flag(tokens)
    if not tokens or KNOWN_OPTION.match(tokens[0]):
        raise UsageError("export needs a format: csv or json", USAGE)
    fmt = tokens[0].lower()
    if fmt not in ("csv", "json"):
        raise UsageError(f"`{_clip(tokens[0], 40)}` is not an export format: use csv or json", USAGE)
    rest = tokens[1:]
    form: Form | None = None
    export_filter = AuditFilter()
    # Options may come before the form (`--output FILE` is often typed first).
    leading = 0
    while leading < len(rest) and KNOWN_OPTION.match(rest[leading]):
        leading += 1
    if leading < len(rest):
        form = _form(rest[leading].lower())
        subject, after = _take_subject(form, rest[leading + 1 :])
        rest = rest[:leading] + after
        export_filter, _ = _form_filter(form, subject)
    args = Arguments.parse(rest, USAGE)
    updates: dict[str, Any] = {}
    for name, reader in (("user", _user_fields), ("ip", _ip_fields), ("request", _request_fields)):
        if name in args.options:
            empty: dict[str, Any] = {}
            fields = args.option(name, reader, empty)
            if any(getattr(export_filter, key) not in (None, False) for key in fields):
                raise UsageError(f"`{name}` is given twice (as the form and as {name}=)", USAGE)
            updates.update(fields)
    if "action" in args.options:
        no_actions: list[str] = []
        actions = args.option("action", _parse_actions, no_actions)
        if export_filter.actions:
            # A form's actions and action= both hold: keep the actions common to both.
            actions = [action for action in export_filter.actions if action in actions]
            if not actions:
                raise UsageError("action= leaves none of this form's actions", USAGE)
        updates["actions"] = actions
    since = args.option("since", lambda text: parse_duration(text, limits.max_window), DEFAULT_EXPORT_SINCE)
    limit = args.option(
        "limit", lambda text: parse_positive_int(text, limits.export_max_rows), limits.export_max_rows
    )
    output = args.option("output", _parse_output, None)
    args.done()
    return ExportRequest(
        format="csv" if fmt == "csv" else "json",
        form=form,
        filter=export_filter.model_copy(update=updates),
        since=since,
        limit=limit,
        output=output,
    )


def _join_output_flag(tokens: list[str]) -> list[str]:
    """Turn the terminal's `--output FILE` / `-o FILE` into the grammar's `output=FILE`."""
    joined: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("--output", "-o"):
            if index + 1 >= len(tokens):
                raise UsageError(f"{token} needs a file name", USAGE)
            joined.append("output=" + tokens[index + 1])
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def _form(word: str) -> Form:
    for form in FORMS:
        if word == form:
            return form
    raise UsageError(
        f"unknown form `{_clip(word, 40)}`: use " + ", ".join(FORMS) + ", export or indexes", USAGE
    )


def _take_subject(form: Form, tokens: list[str]) -> tuple[str, list[str]]:
    """Take the form's subject verbatim (any text is data), or refuse when it is missing."""
    if form not in ("user", "ip", "request"):
        return "", tokens
    what = {"user": "a user id or username", "ip": "an address or CIDR", "request": "a request id"}[form]
    if not tokens or KNOWN_OPTION.match(tokens[0]):
        raise UsageError(f"`{form}` needs {what}", USAGE)
    return tokens[0], tokens[1:]


def _form_filter(form: Form, subject: str) -> tuple[AuditFilter, str]:
    """Return the rows a form is about, and a note when the subject was normalized."""
    if form == "user":
        return AuditFilter(**_user_fields(subject)), ""
    if form == "ip":
        fields = _ip_fields(subject)
        network = fields["network"]
        note = ""
        if "/" in subject and _network_text(network) != subject.strip():
            note = f"searched {_network_text(network)}"
        return AuditFilter(**fields), note
    if form == "request":
        return AuditFilter(**_request_fields(subject)), ""
    if form == "failed-logins":
        return AuditFilter(failed_logins=True), ""
    if form == "mfa":
        return AuditFilter(actions=list(MFA_ACTIONS)), ""
    return AuditFilter(actions=list(SECURITY_ACTIONS)), ""


def check_text(value: str, what: str) -> str:
    """Accept any text PostgreSQL can store as a parameter; refuse what it cannot."""
    if value == "":
        raise UsageError(f"{what} is empty")
    if len(value) > MAX_TEXT:
        raise UsageError(f"{what} is {len(value)} characters long; at most {MAX_TEXT} are accepted")
    if "\x00" in value:
        raise UsageError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode (it holds a lone surrogate)") from None
    return value


def _user_fields(text: str) -> dict[str, Any]:
    """Read a user id (a UUID) or else a username."""
    check_text(text, "the user")
    candidate = text.strip()
    if _UUID_SHAPE.fullmatch(candidate):
        return {"user_id": uuid.UUID(candidate)}
    if _UUID_LOOKALIKE.fullmatch(candidate) and candidate.count("-") >= 3:
        raise UsageError(
            f"`{_clip(text, 40)}` looks like a user id but is not a UUID (8-4-4-4-12 hex digits)"
        )
    return {"username": text}


def _ip_fields(text: str) -> dict[str, Any]:
    """Read an IPv4/IPv6 address (searched as a /32 or /128) or a CIDR network."""
    check_text(text, "the address")
    candidate = text.strip()
    if "%" in candidate:
        raise UsageError(f"`{_clip(text, 40)}` has a zone index (%…), which audit_log addresses never carry")
    try:
        network = ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        raise UsageError(
            f"`{_clip(text, 40)}` is not an IP address or CIDR network"
            " (examples: 192.0.2.10, 10.0.0.0/8, 2001:db8::1, 2001:db8::/32)"
        ) from None
    return {"network": network}


def _request_fields(text: str) -> dict[str, Any]:
    """Read a request id: a UUID, matched in both spellings the platform writes (hex and dashed)."""
    check_text(text, "the request id")
    try:
        parsed = uuid.UUID(text.strip())
    except ValueError:
        raise UsageError(
            f"`{_clip(text, 40)}` is not a request id (a UUID: 32 hex digits, dashes optional)"
        ) from None
    return {"request_ids": [parsed.hex, str(parsed)]}


def _parse_actions(text: str) -> list[str]:
    actions = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not actions:
        raise UsageError("name at least one action, e.g. action=LOGIN,PERMISSION_DENIED")
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise UsageError(f"`{_clip(action, 40)}` is not an action name (letters, digits and _)")
    return sorted(set(actions))


def _parse_min(text: str) -> int:
    if not re.fullmatch(r"\d{1,7}", text.strip()):
        raise UsageError(f"`{_clip(text, 40)}` is not a whole number")
    return int(text)


def _parse_output(text: str) -> str:
    return check_text(text, "the output file")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _network_text(network: Network) -> str:
    """Write a network as typed for a single address (no /32 or /128), else in CIDR form."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


# ---------------------------------------------------------------- results


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
    destination: str
    filename: str
    database: str
    duration_ms: float
    rows_per_second: float
    # Where the file waits on disk until it is uploaded to Slack; never part of JSON output.
    spool: Path | None = Field(default=None, exclude=True, repr=False)


# ---------------------------------------------------------------- queries


class ReadOnlyDatabase(Protocol):
    """What /audit needs of a database adapter (PostgresAdapter provides it)."""

    name: str

    @property
    def database(self) -> str:
        """Return the database name."""
        ...

    def read_only(self, statement_timeout: float) -> Any:
        """Lend a connection in a read-only transaction with a statement timeout."""
        ...


class Params:
    """Collects query parameters and hands out their placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def where_clause(audit_filter: AuditFilter, since: timedelta, params: Params) -> str:
    """Build the WHERE conditions; every value from the user is a parameter."""
    clauses = [f"timestamp >= now() - {params(since)}::interval"]
    if audit_filter.user_id is not None:
        clauses.append(f"user_id = {params(audit_filter.user_id)}")
    if audit_filter.username is not None:
        clauses.append(f"username = {params(audit_filter.username)}")
    if audit_filter.network is not None:
        clauses.append(f"ip_address <<= {params(audit_filter.network)}::cidr")
    if audit_filter.request_ids:
        clauses.append(f"details->>'request_id' = ANY({params(audit_filter.request_ids)}::text[])")
    if audit_filter.actions and len(audit_filter.actions) == 1:
        # `=` rather than `= ANY`: an index on (action, timestamp) then also gives the rows in order.
        clauses.append(f"action = {params(audit_filter.actions[0])}")
    elif audit_filter.actions:
        clauses.append(f"action = ANY({params(audit_filter.actions)}::text[])")
    if audit_filter.failed_logins:
        clauses.append(_FAILED_LOGIN)
    return " AND ".join(clauses)


async def prepare_session(conn: asyncpg.Connection, timeout: float) -> None:
    """Tune the planner for these queries, for this transaction only."""
    await conn.execute(
        # A generic plan sees `$1` instead of the network and cannot turn `<<=` into an index range.
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
        # The recent part of audit_log is in memory: a random page costs about what a sequential one
        # does. At the default (4), the planner walks the timestamp index through a whole day of rows
        # rather than pick the few it wants from the action index.
        " set_config('random_page_cost', '1.1', true),"
        # Distinct counts over a day of events sort in memory instead of spilling to disk.
        " set_config('work_mem', '32MB', true)",
        timeout=timeout,
    )


async def run(db: ReadOnlyDatabase, query: AuditQuery, statement_timeout: float) -> CommandResult:
    """Answer one investigation form in a single read-only snapshot."""
    started = time.perf_counter()
    queried_at = datetime.now(UTC)
    timeout = statement_timeout + CLIENT_TIMEOUT_MARGIN
    try:
        async with db.read_only(statement_timeout) as conn:
            await prepare_session(conn, timeout)
            totals, breakdowns, rows, omitted, omitted_what = await _FORM_QUERIES[query.form](
                conn, query, timeout
            )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return unavailable(error, db.database, statement_timeout)
    return AuditReport(
        form=query.form,
        subject=query.subject,
        description=query.filter.describe() if query.form in ("user", "ip", "request") else query.form,
        note=query.note,
        since=format_duration(query.since),
        limit=query.limit,
        min_failures=query.min_failures if query.form == "failed-logins" else None,
        totals=totals,
        breakdowns=breakdowns,
        rows=rows,
        omitted=omitted,
        omitted_what=omitted_what,
        export_arguments=query.export_arguments() if omitted else None,
        database=db.database,
        queried_at=queried_at,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def unavailable(
    error: BaseException, database: str, statement_timeout: float, rows_written: int | None = None
) -> AuditUnavailable:
    """Say why audit_log could not be read, in words an on-call engineer can act on."""
    reason: Reason
    if isinstance(error, asyncpg.UndefinedTableError):
        reason, detail = "not found", f"database {database} has no audit_log table"
    elif isinstance(error, asyncpg.UndefinedColumnError):
        reason, detail = "unexpected answer", f"audit_log in {database} lacks a column /audit reads: {error}"
    elif isinstance(error, asyncpg.QueryCanceledError):
        reason = "timeout"
        detail = (
            f"the query ran past the {statement_timeout:g} s statement timeout;"
            " ask for a shorter since= or check that the indexes are in place (/audit indexes)"
        )
    elif isinstance(error, asyncpg.InsufficientPrivilegeError):
        reason, detail = "auth failed", f"not allowed to read audit_log: {error}"
    else:
        failure = classify(error)
        reason, detail = failure.reason, failure.detail
    return AuditUnavailable(database=database, reason=reason, detail=detail, rows_written=rows_written)


# Users: distinct user ids, plus distinct usernames of rows without one. Counted apart, because
# comparing uuids is far cheaper than comparing coalesce(user_id::text, username) as text.
_USERS = 'count(DISTINCT user_id) + count(DISTINCT username COLLATE "C") FILTER (WHERE user_id IS NULL)'


async def _totals(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> Totals:
    params = Params()
    where = where_clause(query.filter, query.since, params)
    record = await conn.fetchrow(
        f"""SELECT count(*) AS events, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
                   count(DISTINCT ip_address) AS distinct_ips, {_USERS} AS distinct_users
            FROM audit_log WHERE {where}""",
        *params.values,
        timeout=timeout,
    )
    return Totals(**dict(record))


@dataclass(frozen=True)
class _By:
    """A breakdown to compute: its title and its columns (name -> SQL expression)."""

    title: str
    columns: dict[str, str]


async def _summary(
    conn: asyncpg.Connection, query: AuditQuery, timeout: float, *breakdowns: _By
) -> tuple[Totals, list[Breakdown]]:
    """Count the totals and every breakdown in one pass over the matching rows (GROUPING SETS)."""
    params = Params()
    where = where_clause(query.filter, query.since, params)
    expressions = [expression for by in breakdowns for expression in by.columns.values()]
    keys = [f"k{index}" for index in range(len(expressions))]
    sets, grouping_ids, taken = ["()"], [], 0
    for by in breakdowns:
        own = range(taken, taken + len(by.columns))
        taken += len(by.columns)
        sets.append("(" + ", ".join(keys[index] for index in own) + ")")
        # GROUPING() sets a bit, leftmost argument highest, for each key a set does not group by.
        grouping_ids.append(
            sum(1 << (len(keys) - 1 - index) for index in range(len(keys)) if index not in own)
        )
    grouping, key_list = f"GROUPING({', '.join(keys)})", ", ".join(keys)
    records = await conn.fetch(
        f"""SELECT * FROM (
                SELECT {grouping} AS grouping_id, {key_list}, count(*) AS events,
                       count(DISTINCT ip_address) AS distinct_ips, {_USERS} AS distinct_users,
                       min(timestamp) AS first_seen, max(timestamp) AS last_seen,
                       count(*) OVER (PARTITION BY {grouping}) AS total_groups,
                       row_number() OVER (PARTITION BY {grouping} ORDER BY count(*) DESC, {key_list}) AS rank
                FROM (SELECT {", ".join(f"{e} AS {k}" for e, k in zip(expressions, keys, strict=True))},
                             ip_address, user_id, username, timestamp
                      FROM audit_log WHERE {where}) AS matched
                GROUP BY GROUPING SETS ({", ".join(sets)})
            ) AS ranked
            WHERE rank <= {params(BREAKDOWN_LIMIT)}
            ORDER BY grouping_id, rank""",
        *params.values,
        timeout=timeout,
    )
    whole = (1 << len(keys)) - 1
    [total] = [record for record in records if record["grouping_id"] == whole]
    totals = Totals(
        events=total["events"],
        first_seen=total["first_seen"],
        last_seen=total["last_seen"],
        distinct_ips=total["distinct_ips"],
        distinct_users=total["distinct_users"],
    )
    results, taken = [], 0
    for by, grouping_id in zip(breakdowns, grouping_ids, strict=True):
        names = keys[taken : taken + len(by.columns)]
        taken += len(by.columns)
        mine = [record for record in records if record["grouping_id"] == grouping_id]
        results.append(
            Breakdown(
                title=by.title,
                columns=list(by.columns),
                groups=[_group(record, names) for record in mine],
                total_groups=mine[0]["total_groups"] if mine else 0,
            )
        )
    return totals, results


def _group(record: asyncpg.Record, keys: list[str]) -> Group:
    return Group(
        key=[_cell_value(record[key]) for key in keys],
        events=record["events"],
        distinct_ips=record["distinct_ips"],
        distinct_users=record["distinct_users"],
        first_seen=record["first_seen"],
        last_seen=record["last_seen"],
        ips=[str(ip) for ip in record.get("ips") or []],
    )


def _cell_value(value: Any) -> str:
    return "" if value is None else str(value)


async def _rows(
    conn: asyncpg.Connection, query: AuditQuery, timeout: float, newest_first: bool = True
) -> list[AuditRow]:
    params = Params()
    where = where_clause(query.filter, query.since, params)
    order = "timestamp DESC, id DESC" if newest_first else "timestamp, id"
    records = await conn.fetch(
        f"""SELECT id, timestamp, action, user_id, username, ip_address, {_OUTCOME} AS outcome,
                   details->>'request_id' AS request_id, details
            FROM audit_log WHERE {where}
            ORDER BY {order}
            LIMIT {params(query.limit)}""",
        *params.values,
        timeout=timeout,
    )
    return [
        AuditRow(
            id=record["id"],
            timestamp=record["timestamp"],
            action=record["action"],
            user_id=record["user_id"],
            username=record["username"],
            ip_address=None if record["ip_address"] is None else str(record["ip_address"]),
            outcome=record["outcome"],
            request_id=record["request_id"],
            details=json.loads(record["details"]),
        )
        for record in records
    ]


_BY_ACTION = _By("By action and outcome", {"action": "action", "outcome": _OUTCOME})
_BY_IP = _By("By IP", {"ip": "ip_address"})
_BY_USER = _By("By user", {"user": "coalesce(username, user_id::text)"})

FormAnswer = tuple[Totals, list[Breakdown], list[AuditRow], int, str]


async def _user(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    totals, breakdowns = await _summary(conn, query, timeout, _BY_ACTION, _BY_IP)
    rows = await _rows(conn, query, timeout)
    return totals, breakdowns, rows, totals.events - len(rows), "rows"


async def _ip(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    totals, breakdowns = await _summary(conn, query, timeout, _BY_USER, _BY_ACTION)
    rows = await _rows(conn, query, timeout)
    return totals, breakdowns, rows, totals.events - len(rows), "rows"


async def _request(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    totals = await _totals(conn, query, timeout)
    # One request's rows read best in the order they happened, as in the runbook.
    rows = await _rows(conn, query, timeout, newest_first=False)
    return totals, [], rows, totals.events - len(rows), "rows"


async def _failed_logins(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    totals = await _totals(conn, query, timeout)
    params = Params()
    where = where_clause(query.filter, query.since, params)
    records = await conn.fetch(
        f"""SELECT username AS k0, count(*) AS events, count(DISTINCT ip_address) AS distinct_ips,
                   1 AS distinct_users, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
                   (array_agg(DISTINCT ip_address ORDER BY ip_address))[1:5] AS ips,
                   count(*) OVER () AS total_groups
            FROM audit_log WHERE {where}
            GROUP BY username
            HAVING count(*) > {params(query.min_failures)}
            ORDER BY events DESC, username
            LIMIT {params(query.limit)}""",
        *params.values,
        timeout=timeout,
    )
    total = records[0]["total_groups"] if records else 0
    breakdown = Breakdown(
        title=f"Users with more than {query.min_failures} failed logins",
        columns=["username"],
        groups=[_group(record, ["k0"]) for record in records],
        total_groups=total,
    )
    return totals, [breakdown], [], total - len(records), "users"


async def _mfa(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    by_reason = _By("By reason", {"reason": "coalesce(details->>'reason', '(none)')"})
    totals, breakdowns = await _summary(conn, query, timeout, by_reason)
    rows = await _rows(conn, query, timeout)
    return totals, breakdowns, rows, totals.events - len(rows), "rows"


async def _security(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    # By action alone, so that the covering (action, timestamp) index answers without the table;
    # failed logins come from their own partial index.
    totals, [by_action] = await _summary(conn, query, timeout, _By("By action", {"action": "action"}))
    failed = query.model_copy(update={"filter": AuditFilter(failed_logins=True)})
    _, [logins] = await _summary(conn, failed, timeout, _By("", {"action": "'LOGIN (failed)'"}))
    groups = list(by_action.groups)
    at = next((index + 1 for index, group in enumerate(groups) if group.key == ["LOGIN"]), len(groups))
    groups[at:at] = logins.groups
    by_action = by_action.model_copy(update={"groups": groups, "total_groups": len(groups)})
    rows = await _rows(conn, query, timeout)
    return totals, [by_action], rows, totals.events - len(rows), "rows"


_FORM_QUERIES = {
    "user": _user,
    "ip": _ip,
    "request": _request,
    "failed-logins": _failed_logins,
    "mfa": _mfa,
    "security": _security,
}
