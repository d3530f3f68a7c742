"""The PostgreSQL checks (connections, slow queries, locks, size) and the audit_log security check."""

from __future__ import annotations

from adapters.postgres import Activity
from commands.base import format_duration
from commands.formatting import format_bytes, format_value
from commands.triage.models import Evidence, cut
from commands.triage.sources import Measurement, TriageRun, need
from commands.triage_checklist import (
    AuditCheck,
    PostgresConnectionsCheck,
    PostgresLocksCheck,
    PostgresSizeCheck,
    PostgresSlowQueriesCheck,
)

QUERY_SHOWN = 80  # characters of a SQL query shown in a table cell


async def _activity(run: TriageRun) -> Activity:
    database = need(run.sources.platform_db, "the platform database")
    slower_than, show = run.activity_params
    return await run.shared(("activity", slower_than, show), lambda: database.activity(slower_than, show))


async def measure_postgres_connections(check: PostgresConnectionsCheck, run: TriageRun) -> Measurement:
    """Measure the share of max_connections in use, with the connections by state."""
    activity = await _activity(run)
    share = activity.connections / activity.max_connections if activity.max_connections else None
    rows = [[item["state"], item["datname"], str(item["count"])] for item in activity.by_state]
    return Measurement(
        share,
        f"{activity.connections} of {activity.max_connections} ({format_value(share, 'percent')})",
        "percent",
        f"{activity.reserved_connections} reserved for superusers",
        [Evidence(title="Client connections by state", columns=["state", "database", "count"], rows=rows)],
    )


async def measure_postgres_slow_queries(check: PostgresSlowQueriesCheck, run: TriageRun) -> Measurement:
    """Count the queries running longer than the check allows, longest first."""
    activity = await _activity(run)
    slower_than = check.slower_than.total_seconds()
    slow = [item for item in activity.slow_queries if float(item["seconds"] or 0) > slower_than]
    count = activity.slow_count if slower_than == run.activity_params[0] else len(slow)
    rows = [
        [
            str(item["pid"]),
            format_value(float(item["seconds"]), "seconds"),
            item["datname"],
            item["usename"],
            item["wait_event"] or "—",
            cut(item["query"], QUERY_SHOWN),
        ]
        for item in slow[: check.show]
    ]
    detail = ""
    if slow:
        longest = slow[0]
        detail = f"longest {format_value(float(longest['seconds']), 'seconds')} (pid {longest['pid']})"
    evidence = [
        Evidence(
            title=f"Queries active for more than {format_value(slower_than, 'seconds')}",
            columns=["pid", "running", "database", "user", "waiting on", "query"],
            rows=rows,
            note=None if rows else "none",
        )
    ]
    return Measurement(count, f"{count} quer{'y' if count == 1 else 'ies'}", "count", detail, evidence)


async def measure_postgres_locks(check: PostgresLocksCheck, run: TriageRun) -> Measurement:
    """Count the lock requests not granted, and who blocks them."""
    activity = await _activity(run)
    rows = [
        [
            str(item["pid"]),
            item["locktype"],
            item["mode"],
            item["relation"] or "—",
            format_value(item["seconds"], "seconds") if item["seconds"] is not None else "—",
            ", ".join(str(pid) for pid in item["blocked_by"] or []) or "—",
            cut(item["query"], QUERY_SHOWN),
        ]
        for item in activity.waiting_locks[: check.show]
    ]
    count = activity.waiting_count
    detail = ""
    if activity.waiting_locks:
        first = activity.waiting_locks[0]
        blockers = ", ".join(str(pid) for pid in first["blocked_by"] or []) or "?"
        detail = f"pid {first['pid']} waits for {first['mode']} held by pid {blockers}"
    evidence = [
        Evidence(
            title="Locks not granted",
            columns=["pid", "lock type", "mode", "relation", "waiting", "blocked by", "query"],
            rows=rows,
            note=None if rows else "none",
        )
    ]
    return Measurement(count, f"{count} waiting", "count", detail, evidence)


async def measure_postgres_size(check: PostgresSizeCheck, run: TriageRun) -> Measurement:
    """Measure the platform database's size on disk."""
    activity = await _activity(run)
    return Measurement(
        float(activity.database_bytes),
        format_bytes(activity.database_bytes),
        "bytes",
        f"database {activity.database}",
    )


_AUDIT_BREAKDOWN_SQL = """
WITH events AS (
    SELECT CASE WHEN action = 'LOGIN' THEN 'LOGIN (failed)' ELSE action END AS action,
           coalesce(username, user_id::text, '?') AS who,
           coalesce(host(ip_address), '?') AS ip
    FROM audit_log
    WHERE timestamp > now() - $1::interval
      AND action = ANY($2::text[])
      AND (action <> 'LOGIN' OR details->>'success' = 'false')
)
SELECT action, 'total' AS dimension, '' AS key, count(*) AS n FROM events GROUP BY action
UNION ALL
SELECT action, 'user', who, n FROM (
    SELECT action, who, count(*) AS n,
           row_number() OVER (PARTITION BY action ORDER BY count(*) DESC, who) AS rank
    FROM events GROUP BY action, who
) users WHERE rank <= $3
UNION ALL
SELECT action, 'ip', ip, n FROM (
    SELECT action, ip, count(*) AS n,
           row_number() OVER (PARTITION BY action ORDER BY count(*) DESC, ip) AS rank
    FROM events GROUP BY action, ip
) ips WHERE rank <= $3
"""

# The runbook's "Padrões de Falha de Login" query, without its HAVING so the worst shows anyway.
_FAILED_LOGINS_SQL = """
SELECT coalesce(username, user_id::text, '?') AS who, count(*) AS failures,
       array_agg(DISTINCT host(ip_address)) FILTER (WHERE ip_address IS NOT NULL) AS ips
FROM audit_log
WHERE action = 'LOGIN' AND details->>'success' = 'false' AND timestamp > now() - $1::interval
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2
"""


async def measure_audit(check: AuditCheck, run: TriageRun, timeout: float) -> Measurement:
    """Count the audit_log's security events, and the worst failed logins for one user."""
    database = need(run.sources.platform_db, "the platform database")
    async with database.connection() as conn:
        breakdown = await conn.fetch(
            _AUDIT_BREAKDOWN_SQL, check.since, check.actions, check.top, timeout=timeout
        )
        failed = await conn.fetch(_FAILED_LOGINS_SQL, check.since, check.top, timeout=timeout)
    totals: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    ips: dict[str, list[str]] = {}
    for row in breakdown:
        action, dimension, key, count = row["action"], row["dimension"], row["key"], int(row["n"])
        if dimension == "total":
            totals[action] = count
        else:
            (users if dimension == "user" else ips).setdefault(action, []).append(f"{key} ({count})")
    rows = [
        [action, str(count), ", ".join(users.get(action, [])), ", ".join(ips.get(action, []))]
        for action, count in sorted(totals.items(), key=lambda item: -item[1])
    ]
    since_text = format_duration(check.since)
    evidence = [
        Evidence(
            title=f"Security events in the last {since_text}",
            columns=["action", "events", "top users", "top IPs"],
            rows=rows,
            note=None if rows else "none",
        ),
        Evidence(
            title="Failed logins per user",
            columns=["user", "failed logins", "IPs"],
            rows=[[row["who"], str(row["failures"]), ", ".join(row["ips"] or [])] for row in failed],
            note=None if failed else "none",
        ),
    ]
    worst = int(failed[0]["failures"]) if failed else 0
    total = sum(totals.values())
    detail = f"{total} security events"
    if failed:
        ip_count = len(failed[0]["ips"] or [])
        detail = f"{failed[0]['who']} from {ip_count} IP{'s' if ip_count != 1 else ''}; {detail}"
    return Measurement(
        float(worst),
        f"{worst} failed logins for one user",
        "count",
        detail,
        evidence,
    )
