"""The SQL behind `/audit`: read-only, parameterized queries over audit_log, one set per form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg

from adapters.base import Reason, classify
from commands.audit_request import AuditFilter, AuditQuery
from commands.audit_results import AuditRow, AuditUnavailable, Breakdown, Group, Totals

BREAKDOWN_LIMIT = 15
# Leaves room for the statement timeout to fire on the server before the client gives up.
CLIENT_TIMEOUT_MARGIN = 2.0
# Outcome of an event as the runbook reads it: details.success (LOGIN) and details.reason.
_OUTCOME = (
    "concat_ws(' ', CASE details->>'success' WHEN 'false' THEN 'failed' WHEN 'true' THEN 'ok' END,"
    " details->>'reason')"
)
# Kept literal (not parameters) so that the planner can match the partial index of audit_indexes.sql.
_FAILED_LOGIN = "action = 'LOGIN' AND details->>'success' = 'false'"


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


async def query_form(conn: asyncpg.Connection, query: AuditQuery, timeout: float) -> FormAnswer:
    """Run the queries of the query's form: totals, breakdowns, rows, and how many were left out."""
    return await _FORM_QUERIES[query.form](conn, query, timeout)
