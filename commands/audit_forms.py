"""The `/audit` forms: which breakdowns each counts, and failed logins, counted per user exactly.

How the rows are read (exactly, from a sample, or without an index) is `audit_queries.read`.
"""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from commands.audit_queries import (
    OUTCOME,
    SERVING_INDEXES,
    FormAnswer,
    Found,
    missing_indexes,
    read,
    set_planner,
    where_clause,
)
from commands.audit_request import AuditQuery
from commands.audit_results import Breakdown, Totals
from commands.audit_summary import (
    FAILED_LOGIN,
    TOTALS,
    Budget,
    Dimension,
    Params,
    Scale,
    breakdown_of,
    first_value,
)

_BY_ACTION = Dimension("By action and outcome", {"action": "action", "outcome": OUTCOME})
_BY_IP = Dimension("By IP", {"ip": "abbrev(ip_address)"})
_BY_USER = Dimension("By user", {"user": "coalesce(username, user_id::text)"}, users=False)


def _answer(found: Found, omitted_what: str = "rows") -> FormAnswer:
    rows = found.rows or []
    return FormAnswer(
        totals=found.totals,
        breakdowns=found.breakdowns,
        rows=rows,
        omitted=max(found.totals.events - len(rows), 0),
        omitted_what=omitted_what,
        omitted_estimated="events" in found.totals.estimated,
        estimate=found.estimate,
        missing_index=found.missing_index,
    )


async def _user(conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float) -> FormAnswer:
    return _answer(await read(conn, query, [TOTALS, _BY_ACTION, _BY_IP], budget, timeout))


async def _ip(conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float) -> FormAnswer:
    return _answer(await read(conn, query, [TOTALS, _BY_USER, _BY_ACTION], budget, timeout))


async def _request(conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float) -> FormAnswer:
    # One request's rows read best in the order they happened, as in the runbook; they are few.
    found = await read(conn, query, [TOTALS], budget, timeout, ascending=True, exact_only=True)
    return _answer(found)


async def _mfa(conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float) -> FormAnswer:
    by_reason = Dimension("By reason", {"reason": "coalesce(details->>'reason', '(none)')"})
    return _answer(await read(conn, query, [TOTALS, by_reason], budget, timeout))


async def _security(
    conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float
) -> FormAnswer:
    by_action = Dimension("By action", {"action": "action"})
    # Failed logins get a line of their own, under LOGIN (which counts them too).
    failed = Dimension("", {"action": "'LOGIN (failed)'"}, only=FAILED_LOGIN)
    found = await read(conn, query, [TOTALS, by_action, failed], budget, timeout)
    actions, logins = found.breakdowns
    groups = list(actions.groups)
    at = next((index + 1 for index, group in enumerate(groups) if group.key == ["LOGIN"]), len(groups))
    groups[at:at] = logins.groups
    found.breakdowns = [actions.model_copy(update={"groups": groups, "total_groups": len(groups)})]
    return _answer(found)


async def _failed_logins(
    conn: asyncpg.Connection, query: AuditQuery, budget: Budget, timeout: float
) -> FormAnswer:
    # The runbook groups failed logins by username (most are not accounts): users here are usernames.
    per_user = Dimension(
        f"Users with more than {query.min_failures} failed logins",
        {"username": "username"},
        more_than=query.min_failures,
        limit=query.limit,
        with_ips=True,
        users=False,
    )
    by_user = SERVING_INDEXES["failed-logins by user"]
    missing = await missing_indexes(conn, query, by_user, timeout)
    if missing:
        # One read of the table, every figure exact: the runbook's own query, without its sort.
        totals, users = await _failed_logins_by_user(conn, query, per_user, budget, timeout, scan=True)
        return FormAnswer(
            totals=totals.model_copy(update={"users_are": "usernames"}),
            breakdowns=[users],
            rows=[],
            omitted=max(users.total_groups - len(users.groups), 0),
            omitted_what="users",
            missing_index=missing[0],
        )
    found = await read(
        conn, query, [TOTALS, per_user], budget, timeout, rows=False, who="username",
        sample_users=False, also_needs=by_user, index_totals=False,
    )  # fmt: skip
    if found.estimate is not None:
        # Many failed logins: users and their counts stay exact (the index by username); addresses
        # too while not too many, else from the sample (read from the index alone).
        totals, users = await _failed_logins_by_user(conn, query, per_user, budget, timeout)
        if totals.events > budget.index_rows:
            sampled = found.totals
            totals = totals.model_copy(
                update={
                    "distinct_ips": sampled.distinct_ips,
                    "estimated": [name for name in sampled.estimated if name == "distinct_ips"],
                    "at_least": [name for name in sampled.at_least if name == "distinct_ips"],
                }
            )
        found.totals = totals
        found.breakdowns = [users]
    [users] = found.breakdowns
    return FormAnswer(
        totals=found.totals.model_copy(update={"users_are": "usernames"}),
        breakdowns=[users],
        rows=[],
        omitted=max(users.total_groups - len(users.groups), 0),
        omitted_what="users",
        estimate=found.estimate,
        missing_index=found.missing_index,
    )


async def _failed_logins_by_user(
    conn: asyncpg.Connection,
    query: AuditQuery,
    per_user: Dimension,
    budget: Budget,
    timeout: float,
    scan: bool = False,
) -> tuple[Totals, Breakdown]:
    """Count every username's failed logins exactly (the runbook's query), without its sort or arrays.

    Through the indexes: one walk of the failed-login index by username counts them; times and
    addresses are read only for the users shown, the window's first and last failure from the
    index by time, the addresses counted while there are at most index_rows failures. With `scan`
    (no index): one read of the table gives all of it.
    """
    params = Params()
    where = where_clause(query.filter, query.since, params)
    more_than, limit = params(query.min_failures), params(query.limit)
    if scan:
        text = await first_value(
            conn,
            f"""WITH m AS MATERIALIZED (SELECT timestamp AS ts, ip_address AS ip, username
                                        FROM audit_log WHERE {where}),
                users AS MATERIALIZED (SELECT username, count(*) AS n, min(ts) AS first, max(ts) AS last
                                       FROM m GROUP BY username),
                top AS (SELECT * FROM users WHERE n > {more_than} ORDER BY n DESC, username LIMIT {limit}),
                addresses AS (SELECT username, count(*) AS d, (array_agg(abbrev(ip) ORDER BY ip))[1:5] AS ips
                              FROM (SELECT DISTINCT username, ip FROM m
                                    WHERE ip IS NOT NULL AND coalesce(username, '') IN (
                                        SELECT coalesce(username, '') FROM top)) AS shown
                              GROUP BY username)
                SELECT json_build_object(
                    'events', (SELECT coalesce(sum(n), 0) FROM users),
                    'users', (SELECT count(username) FROM users),
                    'ips', (SELECT count(*) FROM (SELECT DISTINCT ip FROM m WHERE ip IS NOT NULL) AS d),
                    'first', (SELECT min(first) FROM users), 'last', (SELECT max(last) FROM users),
                    'groups', (SELECT count(*) FROM users WHERE n > {more_than}),
                    'top', (SELECT coalesce(json_agg(json_build_object(
                                'key', json_build_array(coalesce(t.username, '')), 'n', t.n,
                                'first', t.first, 'last', t.last, 'd_ip', coalesce(a.d, 0), 'ips', a.ips)
                                ORDER BY t.n DESC, t.username), '[]'::json)
                            FROM top t LEFT JOIN addresses a ON a.username IS NOT DISTINCT FROM t.username)
                )::text""",
            *params.values,
            timeout=timeout,
        )
    else:
        text = await _failed_logins_through_indexes(conn, where, params, more_than, limit, budget, timeout)
    found = json.loads(text)
    first, last = found["first"], found["last"]
    totals = Totals(
        events=found["events"],
        first_seen=None if first is None else datetime.fromisoformat(first),
        last_seen=None if last is None else datetime.fromisoformat(last),
        distinct_ips=found["ips"] or 0,
        distinct_users=found["users"],
    )
    groups = [
        {**item, "d_who": 1, "f1_who": 0, "f1_ip": 0, "ips": item["ips"] or []} for item in found["top"]
    ]
    report = {"rows": 0, "groups": found["groups"], "singletons": 0, "top": groups}
    return totals, breakdown_of(per_user, report, Scale())


async def _failed_logins_through_indexes(
    conn: asyncpg.Connection,
    where: str,
    params: Params,
    more_than: str,
    limit: str,
    budget: Budget,
    timeout: float,
) -> str:
    # One user's failed logins (a NULL username is a user too, as in the runbook's GROUP BY).
    own = (
        f"SELECT timestamp AS ts, ip_address AS ip FROM audit_log WHERE {where} AND username = t.username"
        f" UNION ALL SELECT timestamp, ip_address FROM audit_log"
        f" WHERE {where} AND username IS NULL AND t.username IS NULL"
    )
    await set_planner(conn, timeout, enable_hashagg="off")  # a streaming count over the index's order
    text: str = await first_value(
        conn,
        f"""WITH users AS MATERIALIZED (
                SELECT username, count(*) AS n FROM audit_log WHERE {where} GROUP BY username),
            top AS (SELECT * FROM users WHERE n > {more_than} ORDER BY n DESC, username LIMIT {limit})
            SELECT json_build_object(
                'events', (SELECT coalesce(sum(n), 0) FROM users),
                'users', (SELECT count(username) FROM users),
                'ips', (SELECT CASE WHEN sum(n) <= {params(budget.index_rows)} THEN (
                            SELECT count(DISTINCT ip_address) FROM audit_log WHERE {where}) END FROM users),
                'first', (SELECT min(timestamp) FROM audit_log WHERE {where}),
                'last', (SELECT max(timestamp) FROM audit_log WHERE {where}),
                'groups', (SELECT count(*) FROM users WHERE n > {more_than}),
                'top', (SELECT coalesce(json_agg(json_build_object(
                            'key', json_build_array(coalesce(t.username, '')), 'n', t.n,
                            'first', e.first, 'last', e.last, 'd_ip', a.d, 'ips', a.ips)
                            ORDER BY t.n DESC, t.username), '[]'::json)
                        FROM top t
                        CROSS JOIN LATERAL (SELECT min(ts) AS first, max(ts) AS last FROM ({own}) AS x) AS e
                        CROSS JOIN LATERAL (
                            SELECT count(*) AS d, (array_agg(abbrev(ip) ORDER BY ip))[1:5] AS ips
                            FROM (SELECT DISTINCT ip FROM ({own}) AS y WHERE ip IS NOT NULL) AS z) AS a)
            )::text""",
        *params.values,
        timeout=timeout,
    )
    await set_planner(conn, timeout, enable_hashagg="on")
    return text


_FORM_QUERIES = {
    "user": _user,
    "ip": _ip,
    "request": _request,
    "failed-logins": _failed_logins,
    "mfa": _mfa,
    "security": _security,
}


async def query_form(
    conn: asyncpg.Connection, query: AuditQuery, timeout: float, budget: Budget
) -> FormAnswer:
    """Run the queries of the query's form: totals, breakdowns, rows, and how many were left out."""
    return await _FORM_QUERIES[query.form](conn, query, budget, timeout)
