"""How /audit counts what a form matched: every row when few match, a sample of them when many do.

One SQL statement summarises a set `m` of matching rows: totals and each breakdown, with the
distinct addresses and users of each group. `m` is one of:

- every matching row (exact): when at most `Budget.exact_rows` match (a bounded count through
  the form's index says so first);
- a sample (estimated): the rows in evenly spaced slices of time across the window, read through
  an index whose last column is the timestamp, so unsampled rows are never touched. Every matching
  row is in the sample with the same probability (the slices are a fixed fraction of each period),
  so counts scale by its inverse. An address range, whose own index is not in time order, takes its
  slices from the timestamp index (the address is in it), or, when small, is read once from its
  covering index and sampled uniformly by ids;
- without the form's index (`bounded`): one read of the table, as the runbook's query makes,
  carrying only ids and times; `m` is then every row up to exact_rows, else a uniform sample of
  them by a hash of the id.

Distinct counts are estimated from how often each value was seen (Haas and Stokes' Duj1, as
PostgreSQL's ANALYZE), or given as lower bounds (what the sample saw) when too many values were
seen only once to tell.

Slices are anchored to fixed points in time (multiples of their period since the epoch), so two
people asking the same question a minute apart read the same pages.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from commands.audit_request import AuditFilter
from commands.audit_results import Breakdown, Estimable, Estimate, Group, Totals

BREAKDOWN_LIMIT = 15
# The pilot that sizes a sample reads one row in this many.
PILOT_RATE = 64
# A distinct count is extrapolated from a sample only when at most this share of the values it saw
# were seen once; otherwise it is given as a lower bound.
RELIABLE_SINGLETONS = 0.1


@dataclass(frozen=True)
class Budget:
    """How much one answer may read.

    Up to `exact_rows` matching rows, every figure is exact. Beyond, breakdowns come from a sample
    of about `sample_rows` rows; the totals stay exact, read from the covering index alone, up to
    `index_rows` rows, and are estimated from the sample beyond.
    """

    exact_rows: int = 20_000
    sample_rows: int = 5_000
    index_rows: int = 100_000
    slices: int = 256


@dataclass(frozen=True)
class Dimension:
    """A breakdown: its title and key columns (name -> SQL expression over audit_log).

    `only` limits it to rows where an SQL condition holds; `more_than` to groups with more events
    than that; `with_ips` lists up to five addresses of each group shown; `users` counts each
    group's distinct users.
    """

    title: str
    columns: dict[str, str]
    only: str | None = None
    more_than: int | None = None
    limit: int = BREAKDOWN_LIMIT
    with_ips: bool = False
    # Count each group's distinct users (a breakdown by user has one per group: no need).
    users: bool = True


TOTALS = Dimension("", {"all": "''"})
# A row's user: its id, else its username (the two are told apart by a prefix).
WHO = (
    "CASE WHEN user_id IS NOT NULL THEN 'i' || user_id::text"
    " WHEN username IS NOT NULL THEN 'n' || username END"
)


class Params:
    """Collects query parameters and hands out their placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True)
class Sampling:
    """Which rows a sample holds: those in [k * period, k * period + width) for every whole k."""

    fraction: float
    period: timedelta

    @property
    def width(self) -> timedelta:
        """Return the sampled part of each period."""
        return self.period * self.fraction

    def starts(self, low: datetime, high: datetime) -> list[datetime]:
        """Return the start of every slice that meets [low, high]."""
        seconds = self.period.total_seconds()
        first = math.floor(low.timestamp() / seconds)
        last = math.floor(high.timestamp() / seconds)
        return [datetime.fromtimestamp(k * seconds, UTC) for k in range(first, last + 1)]


@dataclass
class Source:
    """The rows `m` is made of: all matching rows, slices of time, or given ids (a range's sample)."""

    kind: str  # "all", "slices", "slice ids" (index only, then by id) or "ids"
    sampling: Sampling | None = None
    starts: list[datetime] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


@dataclass
class Summary:
    """What the summary statement found, before it is scaled into figures."""

    dimensions: list[dict[str, Any]]
    newest: list[int] | None
    # With `bounded`: every matching row's count, first and last time.
    whole: dict[str, Any] | None = None


async def first_row(conn: asyncpg.Connection, sql: str, *args: Any, timeout: float) -> asyncpg.Record:
    """Run a statement and return its first row.

    Not fetchrow or fetchval: asyncpg asks the server for one row of those, and PostgreSQL runs a
    statement it may have to stop early without parallel workers, so a read of the whole table
    (no index) would take one process instead of three.
    """
    records = await conn.fetch(sql, *args, timeout=timeout)
    return records[0]


async def first_value(conn: asyncpg.Connection, sql: str, *args: Any, timeout: float) -> Any:
    """Run a statement and return the first column of its first row, None without rows (see first_row)."""
    records = await conn.fetch(sql, *args, timeout=timeout)
    return records[0][0] if records else None


def sql_conditions(audit_filter: AuditFilter, params: Params, by_time: bool = False) -> list[str]:
    """Return the filter's conditions apart from the window; every user value is a parameter.

    `by_time`: in slices of time, an address range is checked on each row of the timestamp index
    (written so that no index takes it: walking the range's own index once per slice would read
    the whole range every time).
    """
    clauses = []
    if audit_filter.user_id is not None:
        clauses.append(f"user_id = {params(audit_filter.user_id)}")
    if audit_filter.username is not None:
        clauses.append(f"username = {params(audit_filter.username)}")
    if audit_filter.network is not None:
        network = audit_filter.network
        if network.prefixlen == network.max_prefixlen:
            # An address: `=` gives the index an equality, so rows come in time order (same rows as `<<=`).
            clauses.append(f"ip_address = {params(str(network.network_address))}::inet")
        elif by_time:
            clauses.append(f"coalesce(ip_address <<= {params(network)}::cidr, false)")
        else:
            clauses.append(f"ip_address <<= {params(network)}::cidr")
    if audit_filter.request_ids:
        clauses.append(f"details->>'request_id' = ANY({params(audit_filter.request_ids)}::text[])")
    if audit_filter.actions and len(audit_filter.actions) == 1:
        # `=` rather than `= ANY`: an index on (action, timestamp) then also gives the rows in order.
        clauses.append(f"action = {params(audit_filter.actions[0])}")
    elif audit_filter.actions:
        clauses.append(f"action = ANY({params(audit_filter.actions)}::text[])")
    if audit_filter.failed_logins:
        clauses.append(FAILED_LOGIN)
    return clauses


# Kept literal (not parameters) so that the planner can match the partial indexes of audit_indexes.sql.
FAILED_LOGIN = "action = 'LOGIN' AND details->>'success' = 'false'"


def window(since: timedelta, params: Params) -> str:
    """Return the window condition: the last `since`, up to now and beyond (clocks drift)."""
    return f"timestamp >= now() - {params(since)}::interval"


def is_range(audit_filter: AuditFilter) -> bool:
    """Tell a filter on an address range (its index is not in time order within the range)."""
    network = audit_filter.network
    return network is not None and network.prefixlen < network.max_prefixlen


def distinct_estimate(seen: int, distinct: int, once: int, fraction: float) -> tuple[int, bool]:
    """Estimate how many distinct values all rows hold from a sample of `seen` of them.

    `distinct` values were seen, `once` of them exactly once; each row was sampled with
    probability `fraction`. Returns (figure, at_least). When few values were seen only once
    (at most RELIABLE_SINGLETONS of them), nearly every value was seen again and again: the
    estimate (Haas and Stokes' Duj1, as PostgreSQL's ANALYZE uses) is close and is returned. Else
    no estimator can tell how many values the sample missed, and the honest figure is what it saw:
    a lower bound (at_least=True).
    """
    if fraction >= 1 or seen == 0:
        return distinct, False
    if once > RELIABLE_SINGLETONS * distinct:
        return distinct, True
    denominator = seen - once + once * fraction
    estimate = seen * distinct / denominator if denominator > 0 else distinct / fraction
    return round(min(max(estimate, distinct), seen / fraction)), False


def choose_sampling(estimated_rows: float, since: timedelta, budget: Budget) -> Sampling:
    """Return the sampling that reads about `budget.sample_rows` of `estimated_rows` rows."""
    fraction = min(1.0, budget.sample_rows / max(estimated_rows, 1.0))
    return Sampling(fraction=fraction, period=since / budget.slices)


# ---------------------------------------------------------------- the statement


def _columns(dimensions: list[Dimension], who: str | None, with_id: bool) -> tuple[str, list[list[str]]]:
    """Return the select list of `m` and, per dimension, the names of its key columns."""
    columns = ["timestamp AS ts", "ip_address AS ip", f"({who or 'NULL'})::text AS who"]
    if with_id:
        columns.insert(0, "id")
    names = []
    for index, dimension in enumerate(dimensions):
        own = []
        for key, expression in enumerate(dimension.columns.values()):
            name = f"d{index}k{key}"
            columns.append(f"coalesce(({expression})::text, '') AS {name}")
            own.append(name)
        if dimension.only:
            columns.append(f"({dimension.only}) AS d{index}o")
        names.append(own)
    return ", ".join(columns), names


def _source(source: Source, audit_filter: AuditFilter, since: timedelta, select: str, params: Params) -> str:
    if source.kind == "ids":
        # The ids were chosen among the matching rows: nothing more to check.
        return f"SELECT {select} FROM audit_log WHERE id = ANY({params(source.ids)}::bigint[])"
    if source.kind == "all":
        where = " AND ".join([window(since, params), *sql_conditions(audit_filter, params)])
        return f"SELECT {select} FROM audit_log WHERE {where}"
    conditions = sql_conditions(audit_filter, params, by_time=True)
    assert source.sampling is not None
    low = f"now() - {params(since)}::interval"
    inner = " AND ".join(
        [
            *conditions,
            f"timestamp >= greatest(slice.start, {low})",
            f"timestamp < slice.start + {params(source.sampling.width)}::interval",
        ]
    )
    slices = f"unnest({params(source.starts)}::timestamptz[]) AS slice(start)"
    if source.kind == "slice ids":
        # The slices' ids from an index alone (it holds what the conditions need), then their rows.
        return (
            f"SELECT {select} FROM audit_log WHERE id = ANY(ARRAY(SELECT sampled.id FROM {slices}"
            f" CROSS JOIN LATERAL (SELECT id FROM audit_log WHERE {inner} OFFSET 0) AS sampled))"
        )
    return (
        f"SELECT sampled.* FROM {slices}"
        # OFFSET 0: each slice is its own index scan, never a join the planner reorders.
        f" CROSS JOIN LATERAL (SELECT {select} FROM audit_log WHERE {inner} OFFSET 0) AS sampled"
    )


def _dimension_sql(index: int, dimension: Dimension, keys: list[str], params: Params) -> tuple[str, str]:
    """Return the CTEs of one dimension and the JSON expression that reports it.

    Groups are counted over every row of `m`; distinct addresses and users only for the groups
    shown (the rows of the top groups, `x`), except for the totals, whose one group is all of `m`.
    """
    key_list = ", ".join(keys)
    only = f"d{index}o" if dimension.only else "true"
    having = f"n > {params(dimension.more_than)}" if dimension.more_than is not None else "true"
    match_a = " AND ".join(f"a.{key} = t.{key}" for key in keys)
    match_b = " AND ".join(f"b.{key} = t.{key}" for key in keys)
    match_c = " AND ".join(f"c.{key} = t.{key}" for key in keys)
    t_keys = ", ".join(f"t.{key}" for key in keys)
    whole = dimension.columns == TOTALS.columns
    rows = "m" if whole else f"x{index}"
    shown_rows = (
        ""
        if whole
        else f"""x{index} AS (SELECT {key_list}, ip, who FROM m
                 WHERE {only} AND ({key_list}) IN (SELECT {key_list} FROM t{index})),"""
    )
    users = (
        f"""SELECT {key_list}, count(*) AS d, count(*) FILTER (WHERE c = 1) AS f1
            FROM (SELECT {key_list}, who, count(*) AS c FROM {rows}
                  WHERE who IS NOT NULL GROUP BY {key_list}, who) AS per_user GROUP BY {key_list}"""
        if dimension.users
        # Grouped by user: one user per group, by definition.
        else f"SELECT {key_list}, 1::bigint AS d, 0::bigint AS f1 FROM t{index}"
    )
    ctes = f"""
    g{index} AS (SELECT {key_list}, count(*) AS n, min(ts) AS first, max(ts) AS last
                 FROM m WHERE {only} GROUP BY {key_list}),
    t{index} AS (SELECT * FROM g{index} WHERE {having} ORDER BY n DESC, {key_list}
                 LIMIT {params(dimension.limit)}),
    {shown_rows}
    gi{index} AS (SELECT {key_list}, ip, count(*) AS c FROM {rows}
                  WHERE ip IS NOT NULL GROUP BY {key_list}, ip),
    ia{index} AS (SELECT {key_list}, count(*) AS d, count(*) FILTER (WHERE c = 1) AS f1
                  FROM gi{index} GROUP BY {key_list}),
    ua{index} AS ({users}),
    ips{index} AS (SELECT {key_list}, (array_agg(abbrev(ip) ORDER BY ip))[1:5] AS ips FROM gi{index}
                   WHERE {"true" if dimension.with_ips else "false"} GROUP BY {key_list})"""
    report = f"""json_build_object(
        'rows', (SELECT coalesce(sum(n), 0) FROM g{index}),
        'groups', (SELECT count(*) FROM g{index} WHERE {having}),
        'singletons', (SELECT count(*) FROM g{index} WHERE n = 1 AND {having}),
        'top', (SELECT coalesce(json_agg(json_build_object(
                    'key', json_build_array({t_keys}), 'n', t.n, 'first', t.first, 'last', t.last,
                    'd_ip', coalesce(a.d, 0), 'f1_ip', coalesce(a.f1, 0),
                    'd_who', coalesce(b.d, 0), 'f1_who', coalesce(b.f1, 0),
                    'ips', coalesce(c.ips, '{{}}'::text[])) ORDER BY t.n DESC, {t_keys}), '[]'::json)
                FROM t{index} t LEFT JOIN ia{index} a ON {match_a} LEFT JOIN ua{index} b ON {match_b}
                     LEFT JOIN ips{index} c ON {match_c}))"""
    return ctes, report


async def summarize(
    conn: asyncpg.Connection,
    audit_filter: AuditFilter,
    since: timedelta,
    dimensions: list[Dimension],
    source: Source,
    timeout: float,
    *,
    newest: int | None = None,
    ascending: bool = False,
    who: str | None = WHO,
    bounded: Budget | None = None,
) -> Summary:
    """Run the summary statement over `m`; with `newest`, also return the ids of the newest rows.

    `who` is the SQL expression of a row's user (None: users are not counted). With `bounded`
    (a table read whole, without its index), every matching row's id and time are read once
    (`m_all`), counted with the first and last time; up to exact_rows of them `m` is all of them,
    beyond a uniform sample of about sample_rows (by a hash of the id), so that the summary costs
    far less than the read itself.
    """
    params = Params()
    select, names = _columns(dimensions, who, with_id=newest is not None or bounded is not None)
    ctes, reports = [], []
    source_sql = "" if bounded is not None else _source(source, audit_filter, since, select, params)
    for index, dimension in enumerate(dimensions):
        cte, report = _dimension_sql(index, dimension, names[index], params)
        ctes.append(cte)
        reports.append(report)
    every = "m_all" if bounded is not None else "m"
    newest_sql = "NULL::json"
    if newest is not None:
        order = "ts, id" if ascending else "ts DESC, id DESC"
        newest_sql = (
            f"(SELECT coalesce(json_agg(id ORDER BY {order}), '[]'::json)"
            f" FROM (SELECT id, ts FROM {every} ORDER BY {order} LIMIT {params(newest)}) AS newest)"
        )
    if bounded is None:
        head, whole = f"m AS MATERIALIZED ({source_sql})", "NULL::json"
    else:
        # The read carries only ids and times to this process; the rows summarised are then fetched
        # by id: all of them up to exact_rows, else a uniform sample (by a hash of the id).
        matched = "(SELECT n FROM counted)"
        share = f"1048576.0 * {params(bounded.sample_rows)} / {matched}"
        narrow = _source(source, audit_filter, since, "id, timestamp AS ts", params)
        head = f"""m_all AS MATERIALIZED ({narrow}),
            counted AS (SELECT count(*) AS n, min(ts) AS first, max(ts) AS last FROM m_all),
            m AS MATERIALIZED (
                SELECT {select} FROM audit_log WHERE id = ANY(ARRAY(
                    SELECT id FROM m_all WHERE {matched} <= {params(bounded.exact_rows)}
                       OR (hashint8(id) & 1048575) < {share})))"""
        whole = "(SELECT json_build_object('n', n, 'first', first, 'last', last) FROM counted)"
    statement = f"""WITH {head},{",".join(ctes)}
        SELECT json_build_object('dimensions', json_build_array({", ".join(reports)}),
                                 'newest', {newest_sql}, 'whole', {whole})::text"""
    text = await first_value(conn, statement, *params.values, timeout=timeout)
    answer = json.loads(text)
    return Summary(dimensions=answer["dimensions"], newest=answer["newest"], whole=answer["whole"])


# ---------------------------------------------------------------- figures


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Scale:
    """How sample counts become figures: multiply rows by `factor`; rows were kept with `fraction`."""

    factor: float = 1.0

    @property
    def exact(self) -> bool:
        """Return True when nothing was sampled."""
        return self.factor == 1.0

    @property
    def fraction(self) -> float:
        """Return each row's chance of having been sampled."""
        return 1.0 / self.factor

    def rows(self, seen: int) -> int:
        """Scale a count of sampled rows to an estimate of all rows."""
        return round(seen * self.factor)


def group_of(item: dict[str, Any], scale: Scale) -> Group:
    """Turn one group of the statement's report into figures (estimates when sampled)."""
    seen = item["n"]
    ips, ips_bound = distinct_estimate(seen, item["d_ip"], item["f1_ip"], scale.fraction)
    users, users_bound = distinct_estimate(seen, item["d_who"], item["f1_who"], scale.fraction)
    bounds: list[Estimable] = []
    if ips_bound:
        bounds.append("distinct_ips")
    if users_bound:
        bounds.append("distinct_users")
    return Group(
        key=list(item["key"]),
        events=scale.rows(seen),
        distinct_ips=ips,
        distinct_users=users,
        first_seen=_time(item["first"]),  # type: ignore[arg-type]
        last_seen=_time(item["last"]),  # type: ignore[arg-type]
        ips=list(item["ips"] or []),
        at_least=bounds,
    )


def totals_of(report: dict[str, Any], scale: Scale) -> Totals:
    """Turn the totals dimension into figures."""
    if not report["top"]:
        return Totals(events=0, first_seen=None, last_seen=None, distinct_ips=0, distinct_users=0)
    group = group_of(report["top"][0], scale)
    estimated: list[Estimable] = [] if scale.exact else ["events", "distinct_ips", "distinct_users"]
    return Totals(
        events=group.events,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        distinct_ips=group.distinct_ips,
        distinct_users=group.distinct_users,
        estimated=[name for name in estimated if name not in group.at_least],
        at_least=group.at_least,
    )


def breakdown_of(dimension: Dimension, report: dict[str, Any], scale: Scale) -> Breakdown:
    """Turn one dimension's report into a breakdown (its number of groups estimated when sampled)."""
    total, bound = report["groups"], False
    if not scale.exact:
        total, bound = distinct_estimate(report["rows"], total, report["singletons"], scale.fraction)
    return Breakdown(
        title=dimension.title,
        columns=list(dimension.columns),
        groups=[group_of(item, scale) for item in report["top"]],
        total_groups=total,
        estimated=not scale.exact,
        total_groups_at_least=bound,
    )


def estimate_of(report: dict[str, Any], scale: Scale) -> Estimate | None:
    """Describe the sample behind a report, or None when it is exact."""
    if scale.exact:
        return None
    return Estimate(sample_rows=report["rows"], fraction=scale.fraction)
