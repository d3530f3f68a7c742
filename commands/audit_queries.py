"""The SQL behind `/audit`: read-only, parameterized queries over audit_log, one plan per form.

Each form first asks which of the reviewed indexes (audit_indexes.sql) are in place. With its
index, a form counts exactly what a bounded count says is few (at most Budget.exact_rows rows);
beyond, its breakdowns are estimated from a sample read through the index (`audit_summary`), its
totals counted from the covering index alone up to Budget.index_rows rows and estimated beyond.
The rows shown are always exact, read newest first through the index. Without its index, a form
reads the table once, as the runbook's query does: what is few is counted exactly, the totals'
counts and times always are, the rest comes from a sample of that read; and the answer names the
index that would make it fast. The forms themselves are in `audit_forms`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from adapters.base import Reason, classify
from commands.audit_request import AuditFilter, AuditQuery
from commands.audit_results import AuditRow, AuditUnavailable, Breakdown, Estimate, Totals
from commands.audit_summary import (
    BREAKDOWN_LIMIT,
    PILOT_RATE,
    WHO,
    Budget,
    Dimension,
    Params,
    Sampling,
    Scale,
    Source,
    Summary,
    breakdown_of,
    choose_sampling,
    estimate_of,
    first_row,
    first_value,
    is_range,
    sql_conditions,
    summarize,
    totals_of,
    window,
)

__all__ = [
    "BREAKDOWN_LIMIT",
    "CLIENT_TIMEOUT_MARGIN",
    "SERVING_INDEXES",
    "Budget",
    "FormAnswer",
    "Params",
    "ReadOnlyDatabase",
    "prepare_session",
    "serving_index",
    "unavailable",
    "where_clause",
]

# Leaves room for the statement timeout to fire on the server before the client gives up.
CLIENT_TIMEOUT_MARGIN = 2.0
# Outcome of an event as the runbook reads it: details.success (LOGIN) and details.reason.
OUTCOME = (
    "concat_ws(' ', CASE details->>'success' WHEN 'false' THEN 'failed' WHEN 'true' THEN 'ok' END,"
    " details->>'reason')"
)

# Distinct users: ids, plus usernames of rows without one (counted apart: comparing uuids is cheap).
_USERS = 'count(DISTINCT user_id) + count(DISTINCT username COLLATE "C") FILTER (WHERE user_id IS NULL)'
# The reviewed index (audit_indexes.sql) each kind of filter is read through.
SERVING_INDEXES = {
    "user_id": "audit_log_user_id_timestamp_covering_idx",
    "username": "audit_log_username_timestamp_covering_idx",
    "ip": "audit_log_ip_address_timestamp_covering_idx",
    "request": "audit_log_request_id_idx",
    "failed-logins": "audit_log_failed_login_idx",
    "failed-logins by user": "audit_log_failed_login_username_idx",
    "action": "audit_log_action_timestamp_covering_idx",
    "time": "audit_log_timestamp_covering_idx",
}


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


def where_clause(audit_filter: AuditFilter, since: timedelta, params: Params) -> str:
    """Build the WHERE conditions; every value from the user is a parameter."""
    return " AND ".join([window(since, params), *sql_conditions(audit_filter, params)])


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
        " set_config('work_mem', '32MB', true),"
        # These statements are short; compiling them would cost more than it saves.
        " set_config('jit', 'off', true)",
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


def serving_index(audit_filter: AuditFilter) -> str:
    """Return the name of the reviewed index a filter is read through."""
    if audit_filter.request_ids:
        return SERVING_INDEXES["request"]
    if audit_filter.user_id is not None:
        return SERVING_INDEXES["user_id"]
    if audit_filter.username is not None:
        return SERVING_INDEXES["username"]
    if audit_filter.network is not None:
        return SERVING_INDEXES["ip"]
    if audit_filter.failed_logins:
        return SERVING_INDEXES["failed-logins"]
    return SERVING_INDEXES["action"]


async def _present_indexes(conn: asyncpg.Connection, timeout: float) -> set[str]:
    # `::regclass` fails when there is no audit_log: the caller reports that, as for any form.
    records = await conn.fetch(
        """SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'audit_log'::regclass AND i.indisvalid AND i.indisready""",
        timeout=timeout,
    )
    return {record["relname"] for record in records}


async def missing_indexes(
    conn: asyncpg.Connection, query: AuditQuery, also_needs: str | None, timeout: float
) -> list[str]:
    """Return the reviewed indexes the query is read through that are not in place (valid)."""
    present = await _present_indexes(conn, timeout)
    needed = [serving_index(query.filter), also_needs]
    if is_range(query.filter):
        # An address range's sample comes through the timestamp index.
        needed.append(SERVING_INDEXES["time"])
    return [name for name in needed if name and name not in present]


async def set_planner(conn: asyncpg.Connection, timeout: float, **settings: str) -> None:
    """Change planner settings for the rest of this transaction."""
    calls = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items())
    await conn.execute(f"SELECT {calls}", timeout=timeout)


# ---------------------------------------------------------------- rows


_ROW_COLUMNS = (
    f"id, timestamp, action, user_id, username, ip_address, {OUTCOME} AS outcome,"
    " details->>'request_id' AS request_id, details"
)


def _ordered_ids(
    audit_filter: AuditFilter, since: timedelta, count: int, ascending: bool, params: Params
) -> str:
    """Return SQL for the ids of the first `count` matching rows in time order, one index walk each.

    With several actions, each action's rows are walked apart and merged: the (action, timestamp)
    index gives each in time order, and none of them in order together.
    """
    order = "timestamp, id" if ascending else "timestamp DESC, id DESC"
    actions = audit_filter.actions or []
    if len(actions) <= 1:
        return (
            f"SELECT id FROM audit_log WHERE {where_clause(audit_filter, since, params)}"
            f" ORDER BY {order} LIMIT {params(count)}"
        )
    parts = []
    for action in actions:
        one = audit_filter.model_copy(update={"actions": [action]})
        parts.append(
            f"(SELECT id, timestamp FROM audit_log WHERE {where_clause(one, since, params)}"
            f" ORDER BY {order} LIMIT {params(count)})"
        )
    return (
        f"SELECT id FROM ({' UNION ALL '.join(parts)}) AS each_action ORDER BY {order} LIMIT {params(count)}"
    )


async def _rows_by_id(
    conn: asyncpg.Connection, ids_sql: str, params: Params, ascending: bool, timeout: float
) -> list[AuditRow]:
    order = "timestamp, id" if ascending else "timestamp DESC, id DESC"
    records = await conn.fetch(
        f"SELECT {_ROW_COLUMNS} FROM audit_log WHERE id = ANY(ARRAY({ids_sql})) ORDER BY {order}",
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


async def _rows(
    conn: asyncpg.Connection, query: AuditQuery, timeout: float, ascending: bool = False
) -> list[AuditRow]:
    """Read the first `limit` matching rows in time order through the index."""
    params = Params()
    ids = _ordered_ids(query.filter, query.since, query.limit, ascending, params)
    return await _rows_by_id(conn, ids, params, ascending, timeout)


async def _given_rows(
    conn: asyncpg.Connection, ids: list[int], ascending: bool, timeout: float
) -> list[AuditRow]:
    params = Params()
    return await _rows_by_id(conn, f"SELECT unnest({params(ids)}::bigint[])", params, ascending, timeout)


async def _edge(conn: asyncpg.Connection, query: AuditQuery, timeout: float, oldest: bool) -> datetime | None:
    """Return the time of the oldest (or newest) matching row, through the index."""
    params = Params()
    ids = _ordered_ids(query.filter, query.since, 1, oldest, params)
    edge: datetime | None = await first_value(
        conn, f"SELECT timestamp FROM audit_log WHERE id = ANY(ARRAY({ids}))", *params.values, timeout=timeout
    )
    return edge


# ---------------------------------------------------------------- one form's summary


@dataclass
class FormAnswer:
    """What a form's queries found."""

    totals: Totals
    breakdowns: list[Breakdown]
    rows: list[AuditRow]
    omitted: int
    omitted_what: str = "rows"
    omitted_estimated: bool = False
    estimate: Estimate | None = None
    missing_index: str | None = None


@dataclass
class Found:
    """How a form's matching rows were read, and the totals, breakdowns and rows they gave."""

    totals: Totals
    breakdowns: list[Breakdown]
    rows: list[AuditRow] | None
    estimate: Estimate | None
    missing_index: str | None


async def _probe(
    conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float
) -> tuple[datetime, int]:
    """Count the matching rows through the index, up to exact_rows + 1 (index only, stops early)."""
    params = Params()
    where = where_clause(query.filter, query.since, params)
    # Stop at the first rows found (a bitmap scan would collect them all first); never scan the table.
    await set_planner(conn, timeout, enable_seqscan="off", enable_bitmapscan="off")
    record = await first_row(
        conn,
        f"SELECT now() AS now, (SELECT count(*) FROM (SELECT FROM audit_log WHERE {where}"
        f" LIMIT {params(budget.exact_rows + 1)}) AS found) AS n",
        *params.values,
        timeout=timeout,
    )
    # Not in a `finally`: after a failed statement the transaction takes no more commands.
    await set_planner(conn, timeout, enable_bitmapscan="on")
    return record["now"], record["n"]


async def _hashed_ids(
    conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float
) -> list[int]:
    """Return a uniform sample of about sample_rows matching ids: those with the smallest hashes.

    For an address range, whose index is not in time order: one pass over the range in its covering
    index, keeping the smallest hashes (the same rows for the same question, so their pages stay
    in memory).
    """
    params = Params()
    where = where_clause(query.filter, query.since, params)
    ids: list[int] = await first_value(
        conn,
        f"SELECT array_agg(id) FROM (SELECT id FROM audit_log WHERE {where}"
        f" ORDER BY hashint8(id), id LIMIT {params(budget.sample_rows)}) AS sampled",
        *params.values,
        timeout=timeout,
    )
    return ids or []


async def _pilot(
    conn: asyncpg.Connection, query: AuditQuery, now: datetime, budget: Budget, timeout: float
) -> float:
    """Estimate how many rows match from one row in PILOT_RATE (slices of time, index only)."""
    sampling = Sampling(fraction=1 / PILOT_RATE, period=query.since / budget.slices)
    params = Params()
    conditions = sql_conditions(query.filter, params, by_time=True)
    where = " AND ".join(
        [
            *conditions,
            f"timestamp >= greatest(slice.start, now() - {params(query.since)}::interval)",
            f"timestamp < slice.start + {params(sampling.width)}::interval",
        ]
    )
    starts = sampling.starts(now - query.since, now)
    seen: int = await first_value(
        conn,
        f"SELECT count(*) FROM unnest({params(starts)}::timestamptz[]) AS slice(start)"
        f" CROSS JOIN LATERAL (SELECT FROM audit_log WHERE {where} OFFSET 0) AS sampled",
        *params.values,
        timeout=timeout,
    )
    return float(seen * PILOT_RATE)


async def read(
    conn: asyncpg.Connection,
    query: AuditQuery,
    dimensions: list[Dimension],
    budget: Budget,
    timeout: float,
    *,
    rows: bool = True,
    ascending: bool = False,
    who: str = WHO,
    sample_users: bool = True,
    exact_only: bool = False,
    also_needs: str | None = None,
    index_totals: bool = True,
) -> Found:
    """Summarise the form's matching rows: exactly, or from a sample when many match.

    `dimensions[0]` is the totals; the others are breakdowns. With `rows`, the first `limit`
    matching rows in time order come too (newest first unless `ascending`). A sample reads users
    only with `sample_users`; `who` is the SQL of a row's user. `also_needs` names a second index the
    form cannot do without. Without `index_totals`, sampled totals are never counted from the index.
    """
    newest = query.limit if rows else None
    missing = await missing_indexes(conn, query, also_needs, timeout)
    if missing:
        # One pass over whatever PostgreSQL can use; the answer names the index that would help.
        return await _scan(conn, query, dimensions, budget, newest, ascending, who, missing[0], timeout)
    now, matched = await _probe(conn, query, budget, timeout)
    if matched <= budget.exact_rows or exact_only:
        return await _exact(conn, query, dimensions, newest, ascending, who, timeout)
    # From here on every read goes through an index: a slice read by a table scan would be a disaster.
    await set_planner(conn, timeout, enable_seqscan="off")
    estimated = max(await _pilot(conn, query, now, budget, timeout), budget.exact_rows + 1.0)
    sampling = choose_sampling(estimated, query.since, budget)
    source = Source("slices", sampling, sampling.starts(now - query.since, now))
    method = "rows in evenly spaced slices of time"
    if is_range(query.filter):
        # A range's index is not in time order: its slices come from the timestamp index (the address
        # and id are in it). A range small enough is read whole from its own index instead.
        source = Source("slice ids", sampling, source.starts)
        if estimated <= budget.index_rows:
            source = Source("ids", ids=await _hashed_ids(conn, query, budget, timeout))
            method = "a uniform sample of the range's rows"
    summary = await summarize(
        conn, query.filter, query.since, dimensions, source, timeout, who=who if sample_users else None
    )
    seen = summary.dimensions[0]["rows"]
    if not seen:
        # The slices missed every row (they all came in a burst between two): count them all.
        return await _exact(conn, query, dimensions, newest, ascending, who, timeout)
    # Slices keep every row of the window with the same probability: scale by its inverse.
    scale = Scale(1 / sampling.fraction)
    if index_totals and estimated <= budget.index_rows:
        # Not too many for the index alone: the totals are exact, only the breakdowns are estimated.
        totals = await _index_totals(conn, query, who, timeout)
        # The exact count is known: each sampled row stands for events / seen rows.
        scale = Scale(totals.events / seen)
    else:
        first = await _edge(conn, query, timeout, oldest=True)
        last = await _edge(conn, query, timeout, oldest=False)
        totals = totals_of(summary.dimensions[0], scale)
        totals = totals.model_copy(update={"first_seen": first, "last_seen": last})
    shown = await _rows(conn, query, timeout, ascending) if rows else None
    return _sampled(totals, dimensions, summary, scale, shown, method)


def _sampled(
    totals: Totals,
    dimensions: list[Dimension],
    summary: Summary,
    scale: Scale,
    shown: list[AuditRow] | None,
    method: str,
) -> Found:
    breakdowns = [
        breakdown_of(dimension, report, scale)
        for dimension, report in zip(dimensions[1:], summary.dimensions[1:], strict=True)
    ]
    estimate = estimate_of(summary.dimensions[0], scale)
    if estimate is not None:
        estimate = estimate.model_copy(update={"method": method})
    return Found(totals, breakdowns, shown, estimate, None)


async def _index_totals(conn: asyncpg.Connection, query: AuditQuery, who: str, timeout: float) -> Totals:
    """Count the totals exactly from the form's covering index alone (no table rows are read)."""
    params = Params()
    where = where_clause(query.filter, query.since, params)
    users = "count(DISTINCT username)" if who == "username" else _USERS
    record = await first_row(
        conn,
        f"""SELECT count(*) AS events, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
                   count(DISTINCT ip_address) AS distinct_ips, {users} AS distinct_users
            FROM audit_log WHERE {where}""",
        *params.values,
        timeout=timeout,
    )
    return Totals(**dict(record))


async def _exact(
    conn: asyncpg.Connection,
    query: AuditQuery,
    dimensions: list[Dimension],
    newest: int | None,
    ascending: bool,
    who: str,
    timeout: float,
) -> Found:
    summary = await summarize(
        conn, query.filter, query.since, dimensions, Source("all"), timeout,
        newest=newest, ascending=ascending, who=who,
    )  # fmt: skip
    scale = Scale()
    breakdowns = [
        breakdown_of(dimension, report, scale)
        for dimension, report in zip(dimensions[1:], summary.dimensions[1:], strict=True)
    ]
    shown = None if summary.newest is None else await _given_rows(conn, summary.newest, ascending, timeout)
    return Found(totals_of(summary.dimensions[0], scale), breakdowns, shown, None, None)


async def _scan(
    conn: asyncpg.Connection,
    query: AuditQuery,
    dimensions: list[Dimension],
    budget: Budget,
    newest: int | None,
    ascending: bool,
    who: str,
    missing_index: str,
    timeout: float,
) -> Found:
    """Without the form's index: one read of the table, as the runbook's query makes, and its answer.

    Up to exact_rows matching rows every figure is exact; beyond, the totals' counts and times stay
    exact, and distinct counts and breakdowns come from a uniform sample of the rows read.
    """
    summary = await summarize(
        conn, query.filter, query.since, dimensions, Source("all"), timeout,
        newest=newest, ascending=ascending, who=who, bounded=budget,
    )  # fmt: skip
    shown = None if summary.newest is None else await _given_rows(conn, summary.newest, ascending, timeout)
    whole = summary.whole or {}
    matched = whole.get("n", 0)
    seen = summary.dimensions[0]["rows"]
    if matched <= budget.exact_rows or not seen:
        scale = Scale()
        totals = totals_of(summary.dimensions[0], scale)
        estimate = None
    else:
        scale = Scale(matched / seen)
        sampled = totals_of(summary.dimensions[0], scale)
        totals = sampled.model_copy(
            update={
                "events": matched,
                "first_seen": datetime.fromisoformat(whole["first"]),
                "last_seen": datetime.fromisoformat(whole["last"]),
                "estimated": [name for name in sampled.estimated if name != "events"],
            }
        )
        estimate = estimate_of(summary.dimensions[0], scale)
        if estimate is not None:
            estimate = estimate.model_copy(update={"method": "a uniform sample of the matching rows"})
    breakdowns = [
        breakdown_of(dimension, report, scale)
        for dimension, report in zip(dimensions[1:], summary.dimensions[1:], strict=True)
    ]
    return Found(totals, breakdowns, shown, estimate, missing_index)
