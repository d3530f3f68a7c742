"""Each /audit form against the real PostgreSQL, checked against an independent answer.

The independent answer selects rows with the runbook's own SQL (literal intervals, `=` on the
address, `details::text LIKE` for a request) and does the counting in Python; /audit does both
in SQL with parameters and jsonb operators.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from rich.console import Console

from adapters.postgres import PostgresAdapter
from commands import audit
from commands.audit import AuditReport, AuditUnavailable, Breakdown, Limits, parse
from commands.base import tokenize
from sandbox.platform_db import BRUTE_FORCE_IPS, BRUTE_FORCE_USERNAME
from tests.audit_fixtures import (  # noqa: F401  (fixtures are found by their names)
    KNOWN_REQUEST,
    KNOWN_USER_ID,
    NETMASK_IP,
    audit_db_fixture,
    audit_dsn_fixture,
    bare_dsn_fixture,
    empty_dsn_fixture,
    raw_fixture,
    stable,
)
from tests.netutil import free_port

TIMEOUT = 5.0


@dataclass(frozen=True)
class Event:
    """One row as the independent answer sees it."""

    id: int
    timestamp: datetime
    action: str
    user_id: uuid.UUID | None
    username: str | None
    ip: str | None
    details: Any

    @property
    def who(self) -> str | None:
        return str(self.user_id) if self.user_id is not None else self.username

    @property
    def outcome(self) -> str:
        details = self.details if isinstance(self.details, dict) else {}
        success = details.get("success")
        word = None
        if success is False or success == "false":
            word = "failed"
        elif success is True or success == "true":
            word = "ok"
        reason = details.get("reason")
        reason_text = None if reason is None else (reason if isinstance(reason, str) else json.dumps(reason))
        return " ".join(part for part in (word, reason_text) if part is not None)


async def select(conn: asyncpg.Connection, where: str, *args: Any) -> list[Event]:
    """Fetch rows with a WHERE written the runbook's way."""
    records = await conn.fetch(
        f"SELECT id, timestamp, action, user_id, username, ip_address, details::text AS details"
        f" FROM audit_log WHERE {where}",
        *args,
    )
    return [
        Event(
            id=r["id"],
            timestamp=r["timestamp"],
            action=r["action"],
            user_id=r["user_id"],
            username=r["username"],
            ip=None if r["ip_address"] is None else str(r["ip_address"]),
            details=json.loads(r["details"]),
        )
        for r in records
    ]


def totals_of(events: list[Event], by_username: bool = False) -> dict[str, Any]:
    return {
        "events": len(events),
        "first_seen": min((e.timestamp for e in events), default=None),
        "last_seen": max((e.timestamp for e in events), default=None),
        "distinct_ips": len({e.ip for e in events if e.ip is not None}),
        "distinct_users": len({e.username if by_username else e.who for e in events} - {None}),
    }


def groups_of(events: list[Event], key: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    grouped: dict[tuple[str, ...], list[Event]] = defaultdict(list)
    for event in events:
        grouped[key(event)].append(event)
    return {name: totals_of(members) for name, members in grouped.items()}


def newest(events: list[Event], limit: int) -> list[int]:
    return [e.id for e in sorted(events, key=lambda e: (e.timestamp, e.id), reverse=True)[:limit]]


def assert_breakdown(
    breakdown: Breakdown, expected: dict[tuple[str, ...], dict[str, Any]], biggest_first: bool = True
) -> None:
    """Every group shown is right, the biggest are shown, and the number of groups is right."""
    assert breakdown.total_groups == len(expected)
    shown = {}
    for group in breakdown.groups:
        shown[tuple(group.key)] = {
            "events": group.events,
            "first_seen": group.first_seen,
            "last_seen": group.last_seen,
            "distinct_ips": group.distinct_ips,
            "distinct_users": group.distinct_users,
        }
    for key, counts in shown.items():
        assert expected[key] == counts, key
    assert len(shown) == min(len(expected), audit.BREAKDOWN_LIMIT)
    hidden = [counts["events"] for key, counts in expected.items() if key not in shown]
    assert max(hidden, default=0) <= min((g.events for g in breakdown.groups), default=0)
    if biggest_first:
        assert [g.events for g in breakdown.groups] == sorted(
            (g.events for g in breakdown.groups), reverse=True
        )


def by_action(event: Event) -> tuple[str, str]:
    return (event.action, event.outcome)


async def answer(db: PostgresAdapter, tokens: list[str]) -> AuditReport:
    request = parse(tokens, Limits())
    assert isinstance(request, audit.AuditQuery)
    result = await audit.run(db, request, TIMEOUT)
    assert isinstance(result, AuditReport), result
    return result


def check_totals(report: AuditReport, events: list[Event], by_username: bool = False) -> None:
    """The totals are exact, and say so."""
    figures = report.totals.model_dump(exclude={"estimated", "at_least", "users_are"})
    assert figures == totals_of(events, by_username)
    assert report.totals.estimated == report.totals.at_least == [] and report.estimate is None


# ---------------------------------------------------------------- the forms


async def test_user_by_username(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    events, report = await stable(
        lambda: select(
            raw, f"username = '{BRUTE_FORCE_USERNAME}' AND timestamp > NOW() - INTERVAL '24 hours'"
        ),
        lambda: answer(audit_db, ["user", BRUTE_FORCE_USERNAME]),
    )
    assert len(events) > 30  # the seeded attack is in the window
    check_totals(report, events)
    assert_breakdown(report.breakdowns[0], groups_of(events, by_action))
    assert_breakdown(report.breakdowns[1], groups_of(events, lambda e: (e.ip,)))
    assert [row.id for row in report.rows] == newest(events, 20)
    assert report.omitted == len(events) - 20
    assert report.export_arguments == f"export csv user {BRUTE_FORCE_USERNAME} since=1d"
    attack = report.breakdowns[0].groups[0]
    assert (attack.key, attack.events) == (["LOGIN", "failed invalid_password"], 24)


async def test_user_by_id_with_limit_and_window(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    events, report = await stable(
        lambda: select(raw, f"user_id = '{KNOWN_USER_ID}' AND timestamp > NOW() - INTERVAL '2 hours'"),
        lambda: answer(audit_db, ["user", str(KNOWN_USER_ID), "since=2h", "limit=2"]),
    )
    assert len(events) == 4  # the row of 30 hours ago is outside the window
    check_totals(report, events)
    assert [row.id for row in report.rows] == newest(events, 2)
    assert report.omitted == 2
    outcomes = {tuple(g.key) for g in report.breakdowns[0].groups}
    # details.success written as the string "false" counts as a failure, as the runbook's ->> does.
    assert ("LOGIN", "failed typed") in outcomes and ("LOGIN", "failed invalid_password") in outcomes


@pytest.mark.parametrize("address", [BRUTE_FORCE_IPS[0], BRUTE_FORCE_IPS[3], "2001:db8:abcd::7"])
async def test_ip_address_matches_the_runbooks_equality(
    audit_db: PostgresAdapter, raw: asyncpg.Connection, address: str
) -> None:
    events, report = await stable(
        lambda: select(raw, f"ip_address = '{address}' AND timestamp > NOW() - INTERVAL '24 hours'"),
        lambda: answer(audit_db, ["ip", address, "limit=50"]),
    )
    assert events
    check_totals(report, events)
    assert_breakdown(report.breakdowns[0], groups_of(events, lambda e: (e.username or str(e.user_id),)))
    assert_breakdown(report.breakdowns[1], groups_of(events, by_action))
    assert [row.id for row in report.rows] == newest(events, 50)


@pytest.mark.parametrize(
    "network", ["192.168.1.0/24", "10.20.30.0/24", "2001:db8:abcd::/48", "2a03:b0c0::/32", "0.0.0.0/0"]
)
async def test_ip_network_matches_python_membership(
    audit_db: PostgresAdapter, raw: asyncpg.Connection, network: str
) -> None:
    wanted = ipaddress.ip_network(network)

    async def inside() -> list[Event]:
        window = await select(raw, "timestamp > NOW() - INTERVAL '3 days' AND ip_address IS NOT NULL")
        return [e for e in window if _within(e.ip, wanted)]

    events, report = await stable(inside, lambda: answer(audit_db, ["ip", network, "since=3d", "limit=200"]))
    assert events
    check_totals(report, events)
    assert [row.id for row in report.rows] == newest(events, 200)


def _within(ip: str | None, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    if ip is None:
        return False
    interface = ipaddress.ip_interface(ip)
    # PostgreSQL's <<= also asks that a stored network be no wider than the one searched.
    return interface.network.prefixlen >= network.prefixlen and interface.ip in network


async def test_an_inet_stored_with_a_netmask_belongs_to_its_network(audit_db: PostgresAdapter) -> None:
    """PostgreSQL's `<<=` (and the runbook's `=`): 10.20.30.40/24 is in 10.20.30.0/24, not in .40/32."""
    assert NETMASK_IP not in [row.ip_address for row in (await answer(audit_db, ["ip", "10.20.30.40"])).rows]
    network = await answer(audit_db, ["ip", "10.20.30.0/24"])
    assert sorted(row.ip_address or "" for row in network.rows) == ["10.20.30.40/24", "10.20.30.41"]


@pytest.mark.parametrize("spelling", [KNOWN_REQUEST.hex, str(KNOWN_REQUEST), str(KNOWN_REQUEST).upper()])
async def test_request_matches_the_runbooks_like(
    audit_db: PostgresAdapter, raw: asyncpg.Connection, spelling: str
) -> None:
    like = (
        f"(details::text LIKE '%{KNOWN_REQUEST.hex}%' OR details::text LIKE '%{KNOWN_REQUEST}%')"
        " AND timestamp > NOW() - INTERVAL '24 hours'"
    )
    events, report = await stable(lambda: select(raw, like), lambda: answer(audit_db, ["request", spelling]))
    assert len(events) == 2
    check_totals(report, events)
    # One request reads in the order it happened.
    assert [row.id for row in report.rows] == [
        e.id for e in sorted(events, key=lambda e: (e.timestamp, e.id))
    ]


async def test_request_of_the_seed(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    [record] = await raw.fetch("SELECT id, details->>'request_id' AS rid FROM audit_log WHERE id = 1500")
    events = await select(raw, f"details::text LIKE '%{record['rid']}%'")
    report = await answer(audit_db, ["request", record["rid"], "since=30d"])
    assert [row.id for row in report.rows] == [e.id for e in events] == [1500]


async def test_failed_logins_match_the_runbooks_query(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    runbook = """
        SELECT username, COUNT(*) as failed_attempts,
               array_agg(DISTINCT ip_address) as ips
        FROM audit_log
        WHERE action = 'LOGIN'
          AND details->>'success' = 'false'
          AND timestamp > NOW() - INTERVAL '24 hours'
        GROUP BY username
        HAVING COUNT(*) > 5
        ORDER BY failed_attempts DESC"""
    expected, report = await stable(lambda: raw.fetch(runbook), lambda: answer(audit_db, ["failed-logins"]))
    [users] = report.breakdowns
    assert [(g.key[0], g.events) for g in users.groups] == [
        (r["username"], r["failed_attempts"]) for r in expected
    ]
    assert users.groups[0].key == [BRUTE_FORCE_USERNAME]
    assert sorted(users.groups[0].ips) == sorted(str(ip) for ip in expected[0]["ips"])
    assert set(BRUTE_FORCE_IPS) <= set(users.groups[0].ips)

    events = await select(
        raw, "action = 'LOGIN' AND details->>'success' = 'false' AND timestamp > NOW() - INTERVAL '24 hours'"
    )
    # The runbook counts failed logins by username: so does this form's total of users.
    check_totals(report, events, by_username=True)
    assert report.totals.users_are == "usernames"
    assert report.rows == []


async def test_failed_logins_minimum_and_limit(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    events, report = await stable(
        lambda: select(raw, "action = 'LOGIN' AND timestamp > NOW() - INTERVAL '3 days'"),
        lambda: answer(audit_db, ["failed-logins", "min=1", "since=3d", "limit=3"]),
    )
    failures = Counter(e.username for e in events if e.outcome.startswith("failed"))
    above = {name: count for name, count in failures.items() if count > 1}
    [users] = report.breakdowns
    assert users.total_groups == len(above) > 3
    assert [g.events for g in users.groups] == sorted(above.values(), reverse=True)[:3]
    assert report.omitted == len(above) - 3 and report.omitted_what == "users"
    assert report.export_arguments == "export csv failed-logins since=3d"


async def test_mfa_failures_with_reasons(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    # The runbook's MFA query looks at 1 hour; /audit's window is 24 h unless since= says otherwise.
    runbook = "action = 'MFA_CHALLENGE_FAILED' AND timestamp > NOW() - INTERVAL '24 hours'"
    events, report = await stable(lambda: select(raw, runbook), lambda: answer(audit_db, ["mfa"]))
    check_totals(report, events)
    assert_breakdown(report.breakdowns[0], groups_of(events, lambda e: (e.details.get("reason", "(none)"),)))
    assert [row.id for row in report.rows] == newest(events, 20)
    assert {row.outcome for row in report.rows} <= {"invalid_code", "expired_code", "replayed_code"}


async def test_security_events_by_action(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    runbook = (
        "action IN ('LOGIN', 'MFA_CHALLENGE_FAILED', 'RATE_LIMIT_EXCEEDED', 'PERMISSION_DENIED')"
        " AND timestamp > NOW() - INTERVAL '24 hours'"
    )
    events, report = await stable(
        lambda: select(raw, runbook), lambda: answer(audit_db, ["security", "limit=200"])
    )
    check_totals(report, events)
    expected = groups_of(events, lambda e: (e.action,))
    # Failed logins get a line of their own, under LOGIN (which counts them too).
    failed_logins = [e for e in events if e.action == "LOGIN" and e.outcome.startswith("failed")]
    expected[("LOGIN (failed)",)] = totals_of(failed_logins)
    [by_action] = report.breakdowns
    assert_breakdown(by_action, expected, biggest_first=False)
    keys = [group.key[0] for group in by_action.groups]
    assert keys.index("LOGIN (failed)") == keys.index("LOGIN") + 1
    assert [row.id for row in report.rows] == newest(events, 200)
    assert report.omitted == len(events) - 200 > 0


async def test_an_empty_window(audit_db: PostgresAdapter) -> None:
    report = await answer(audit_db, ["user", "nobody.at.all", "since=1m"])
    assert report.totals.events == 0 and report.rows == [] and report.omitted == 0
    assert report.totals.first_seen is None and report.export_arguments is None


# ---------------------------------------------------------------- read-only and failures


async def test_the_transaction_is_read_only_with_a_statement_timeout(audit_db: PostgresAdapter) -> None:
    async with audit_db.read_only(1.5) as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "1500ms"
        assert await conn.fetchval("SHOW transaction_read_only") == "on"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM audit_log")
    # Local settings end with the transaction: the pooled connection is back to normal.
    async with audit_db.connection() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "0"


async def test_a_query_stuck_behind_a_lock_is_stopped_by_the_statement_timeout(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    async with raw.transaction():
        await raw.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        request = parse(["security"])
        assert isinstance(request, audit.AuditQuery)
        result = await audit.run(audit_db, request, statement_timeout=0.3)
    assert isinstance(result, AuditUnavailable)
    assert result.reason == "timeout" and "0.3 s statement timeout" in result.detail
    assert not result.ok and result.exit_code() == 1


async def test_missing_table_is_a_clear_result(empty_dsn: str) -> None:
    db = PostgresAdapter("postgres", empty_dsn, timeout=2)
    try:
        request = parse(["user", "ana"])
        assert isinstance(request, audit.AuditQuery)
        result = await audit.run(db, request, TIMEOUT)
    finally:
        await db.aclose()
    assert isinstance(result, AuditUnavailable)
    assert result.reason == "not found"
    assert result.detail == f"database {db.database} has no audit_log table"


async def test_unreachable_database_is_a_clear_result() -> None:
    db = PostgresAdapter("postgres", f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout=1)
    try:
        request = parse(["mfa"])
        assert isinstance(request, audit.AuditQuery)
        result = await audit.run(db, request, TIMEOUT)
    finally:
        await db.aclose()
    assert isinstance(result, AuditUnavailable) and result.reason == "refused"


@pytest.mark.usefixtures("postgres")
async def test_missing_database_is_a_clear_result() -> None:
    db = PostgresAdapter("postgres", "postgresql://postgres@127.0.0.1:5432/chatops_no_such_db", timeout=2)
    try:
        request = parse(["mfa"])
        assert isinstance(request, audit.AuditQuery)
        result = await audit.run(db, request, TIMEOUT)
    finally:
        await db.aclose()
    assert isinstance(result, AuditUnavailable) and result.reason == "not found"
    assert "chatops_no_such_db" in result.detail


# ---------------------------------------------------------------- indexes


async def test_indexes_are_listed_with_their_state(audit_db: PostgresAdapter, empty_dsn: str) -> None:
    from commands.audit_indexes import indexes

    listed = await indexes(audit_db, TIMEOUT)
    assert listed.checked and listed.missing == []
    assert len(listed.statements) == 8
    for item in listed.statements:
        assert item.purpose.startswith("Serves: ")
        assert item.sql.startswith(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {item.name}")

    empty = PostgresAdapter("postgres", empty_dsn, timeout=2)
    try:
        missing = await indexes(empty, TIMEOUT)
    finally:
        await empty.aclose()
    assert missing.checked and len(missing.missing) == 8
    assert missing.detail == f"database {empty.database} has no audit_log table"


@pytest.mark.parametrize(
    ("tokens", "index"),
    [
        (["user", BRUTE_FORCE_USERNAME], "audit_log_username_timestamp_covering_idx"),
        (["user", str(KNOWN_USER_ID)], "audit_log_user_id_timestamp_covering_idx"),
        (["ip", "2a03:b0c0::/32"], "audit_log_ip_address_timestamp_covering_idx"),
        (["request", str(KNOWN_REQUEST)], "audit_log_request_id_idx"),
        (["failed-logins"], "audit_log_failed_login_idx"),
    ],
)
async def test_each_form_can_use_its_index(audit_db: PostgresAdapter, tokens: list[str], index: str) -> None:
    """With sequential scans priced out, the planner reaches for the index the file says serves the form."""
    request = parse(tokens)
    assert isinstance(request, audit.AuditQuery)
    params = audit.Params()
    where = audit.where_clause(request.filter, request.since, params)
    async with audit_db.read_only(TIMEOUT) as conn:
        await audit.prepare_session(conn, TIMEOUT)
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan_text = "\n".join(
            row["QUERY PLAN"]
            for row in await conn.fetch(f"EXPLAIN SELECT id FROM audit_log WHERE {where}", *params.values)
        )
    assert index in plan_text, plan_text


# ---------------------------------------------------------------- request ids as platforms write them

# Each id with a decoy a pattern would wrongly match (LIKE's `_` and `%`, a regex's `.*` and `[c]`).
REQUEST_ID_SHAPES = [
    ("req-4242424", "req-4242425"),
    ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW"),  # ULID
    ("00f067aa0ba902b7", "00f067aa0ba902b8"),  # 16 hex
    ("4bf92f3577b34da6a3ce929d0e0e4799", "4bf92f3577b34da6a3ce929d0e0e4798"),  # 32 hex
    ("1-5759e988-bd862e3fe1be46a994272793", "1-5759e988-bd862e3fe1be46a994272794"),  # AWS X-Ray
    ("req_1%", "reqX1-and-more"),
    ("a.*b[c]", "aXYZbc"),
    ("win\\req\\9", "win/req/9"),
    ("café-é-42", "cafe-e-42"),
]


@pytest.mark.parametrize(("identifier", "decoy"), REQUEST_ID_SHAPES)
async def test_request_ids_of_every_shape_match_exactly(
    audit_db: PostgresAdapter, raw: asyncpg.Connection, identifier: str, decoy: str
) -> None:
    marker = uuid.uuid4()
    try:
        for value in (identifier, decoy, identifier + "-longer"):
            await raw.execute(
                "INSERT INTO audit_log (action, user_id, details) VALUES ('FILE_UPLOAD', $1, $2::jsonb)",
                marker,
                json.dumps({"request_id": value}),
            )
        report = await answer(audit_db, ["request", identifier])
        assert [row.request_id for row in report.rows] == [identifier]
        assert report.totals.events == 1 and report.description == f"request {identifier}"
        # The export the answer offers asks for the same id.
        request = parse(["request", identifier])
        assert isinstance(request, audit.AuditQuery)
        again = parse(tokenize(request.export_arguments()))
        assert isinstance(again, audit.ExportRequest) and again.filter == request.filter
    finally:
        await raw.execute("DELETE FROM audit_log WHERE user_id = $1", marker)


# ---------------------------------------------------------------- many rows: estimates, said so

# A budget small enough that the seeded table takes the paths a 5-million-row table takes.
SMALL = audit.Budget(exact_rows=40, sample_rows=300, index_rows=0)
SMALL_WITH_INDEX_TOTALS = audit.Budget(exact_rows=40, sample_rows=300, index_rows=10**6)
NARROW = audit.Budget(exact_rows=40, sample_rows=100, index_rows=10**6)


async def answer_with(db: PostgresAdapter, tokens: list[str], budget: audit.Budget) -> AuditReport:
    request = parse(tokens, Limits())
    assert isinstance(request, audit.AuditQuery)
    result = await audit.run(db, request, TIMEOUT, budget)
    assert isinstance(result, AuditReport), result
    return result


def within(estimate: int, truth: int, tolerance: float) -> bool:
    return abs(estimate - truth) <= tolerance * truth


SECURITY = (
    "action IN ('LOGIN', 'MFA_CHALLENGE_FAILED', 'RATE_LIMIT_EXCEEDED', 'PERMISSION_DENIED')"
    " AND timestamp > NOW() - INTERVAL '3 days'"
)


async def test_many_rows_are_estimated_from_a_sample_and_say_so(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    events, report = await stable(
        lambda: select(raw, SECURITY), lambda: answer_with(audit_db, ["security", "since=3d"], SMALL)
    )
    truth = totals_of(events)
    assert len(events) > 10 * SMALL.exact_rows
    totals = report.totals
    assert report.estimate is not None and 0 < report.estimate.fraction < 1
    assert report.estimate.sample_rows > SMALL.sample_rows / 3
    # Events are an estimate, and a close one; first and last seen stay exact.
    assert "events" in totals.estimated and within(totals.events, truth["events"], 0.35)
    assert (totals.first_seen, totals.last_seen) == (truth["first_seen"], truth["last_seen"])
    # A distinct count is ≈ (close) or ≥ (a true lower bound), never both.
    for name in ("distinct_ips", "distinct_users"):
        assert (name in totals.estimated) != (name in totals.at_least)
        if name in totals.at_least:
            assert getattr(totals, name) <= truth[name]
        else:
            assert within(getattr(totals, name), truth[name], 0.35)
    [by_action] = report.breakdowns
    assert by_action.estimated
    expected = groups_of(events, lambda e: (e.action,))
    for group in by_action.groups:
        if group.key != ["LOGIN (failed)"]:
            assert within(group.events, expected[tuple(group.key)]["events"], 0.5), group
    # The rows shown are exact: the newest of all matching rows, not of the sample.
    assert [row.id for row in report.rows] == newest(events, 20)
    assert report.omitted_estimated and report.omitted == totals.events - 20


async def test_totals_stay_exact_from_the_index_while_breakdowns_are_sampled(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    events, report = await stable(
        lambda: select(raw, SECURITY),
        lambda: answer_with(audit_db, ["security", "since=3d"], SMALL_WITH_INDEX_TOTALS),
    )
    check_totals_exact_but_sampled(report, events)
    assert report.breakdowns[0].estimated


def check_totals_exact_but_sampled(report: AuditReport, events: list[Event]) -> None:
    assert report.totals.model_dump(exclude={"estimated", "at_least", "users_are"}) == totals_of(events)
    assert report.totals.estimated == report.totals.at_least == []
    assert report.estimate is not None and not report.omitted_estimated


@pytest.mark.parametrize("budget", [SMALL, SMALL_WITH_INDEX_TOTALS], ids=["by time", "by id"])
async def test_an_address_range_is_sampled_through_its_indexes(
    audit_db: PostgresAdapter, raw: asyncpg.Connection, budget: audit.Budget
) -> None:
    """A wide range through the timestamp index in slices; one with exact totals, uniformly by id."""

    async def inside() -> list[Event]:
        return await select(raw, "ip_address <<= '0.0.0.0/0' AND timestamp > NOW() - INTERVAL '3 days'")

    events, report = await stable(
        inside, lambda: answer_with(audit_db, ["ip", "0.0.0.0/0", "since=3d"], budget)
    )
    assert report.estimate is not None
    assert [row.id for row in report.rows] == newest(events, 20)
    if budget.index_rows:
        check_totals_exact_but_sampled(report, events)
        assert report.estimate.method == "a uniform sample of the range's rows"
    else:
        assert report.totals.estimated[0] == "events"
        assert within(report.totals.events, len(events), 0.35)
        assert report.estimate.method == "rows in evenly spaced slices of time"
    [by_user, by_action] = report.breakdowns
    assert by_user.estimated and by_action.estimated
    assert sum(group.events for group in by_action.groups) <= report.totals.events * 1.5


async def test_failed_logins_count_every_user_exactly_even_when_sampled(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    runbook = """
        SELECT username, COUNT(*) as failed_attempts, array_agg(DISTINCT ip_address) as ips
        FROM audit_log WHERE action = 'LOGIN' AND details->>'success' = 'false'
          AND timestamp > NOW() - INTERVAL '3 days'
        GROUP BY username HAVING COUNT(*) > 1 ORDER BY failed_attempts DESC, username"""
    budget = audit.Budget(exact_rows=10, sample_rows=5, index_rows=0)
    expected, report = await stable(
        lambda: raw.fetch(runbook),
        lambda: answer_with(audit_db, ["failed-logins", "min=1", "since=3d", "limit=200"], budget),
    )
    [users] = report.breakdowns
    assert report.estimate is not None and not users.estimated
    assert [(g.key[0], g.events) for g in users.groups] == [
        (r["username"], r["failed_attempts"]) for r in expected
    ]
    assert users.total_groups == len(expected)
    for group, record in zip(users.groups, expected, strict=True):
        addresses = sorted(str(ip) for ip in record["ips"] if ip is not None)
        assert group.distinct_ips == len(addresses)
        assert set(group.ips) <= set(addresses) and len(group.ips) == min(5, len(addresses))
    events = await select(
        raw, "action = 'LOGIN' AND details->>'success' = 'false' AND timestamp > NOW() - INTERVAL '3 days'"
    )
    truth = totals_of(events, by_username=True)
    totals = report.totals
    assert (totals.events, totals.first_seen, totals.last_seen, totals.distinct_users) == (
        truth["events"],
        truth["first_seen"],
        truth["last_seen"],
        truth["distinct_users"],
    )
    # Only the addresses came from the sample.
    assert totals.estimated + totals.at_least == ["distinct_ips"]
    if totals.at_least:
        assert totals.distinct_ips <= truth["distinct_ips"]


# ---------------------------------------------------------------- without the reviewed indexes


@pytest.mark.parametrize(
    ("tokens", "where", "index"),
    [
        (
            ["user", BRUTE_FORCE_USERNAME],
            f"username = '{BRUTE_FORCE_USERNAME}' AND timestamp > NOW() - INTERVAL '24 hours'",
            "audit_log_username_timestamp_covering_idx",
        ),
        (["security"], SECURITY.replace("3 days", "24 hours"), "audit_log_action_timestamp_covering_idx"),
        (
            ["ip", "192.168.1.0/24"],
            "ip_address <<= '192.168.1.0/24' AND timestamp > NOW() - INTERVAL '24 hours'",
            "audit_log_ip_address_timestamp_covering_idx",
        ),
    ],
)
async def test_without_its_index_a_form_reads_the_table_once_exactly_and_names_the_index(
    bare_dsn: str, tokens: list[str], where: str, index: str
) -> None:
    from bot.render.audit import slack, terminal

    db = PostgresAdapter("postgres", bare_dsn, timeout=5.0)
    raw_bare = await asyncpg.connect(bare_dsn)
    try:
        events, report = await stable(
            lambda: select(raw_bare, where), lambda: answer_with(db, tokens, audit.Budget())
        )
        # Many rows: one read still; counts and times exact, distinct counts and breakdowns from a
        # uniform sample of what that read found.
        many = await answer_with(db, tokens, NARROW)
    finally:
        await raw_bare.close()
        await db.aclose()
    assert events
    check_totals(report, events)
    assert report.missing_index == index and report.estimate is None
    assert many.missing_index == index
    if tokens == ["security"]:  # many more rows than the sample's size
        assert len(events) > 2 * NARROW.sample_rows
        assert many.estimate is not None and many.estimate.method == "a uniform sample of the matching rows"
        assert all(breakdown.estimated for breakdown in many.breakdowns)
        # Counts and times exact; distinct counts from the sample, said so.
        assert "events" not in many.totals.estimated + many.totals.at_least
        assert sorted(many.totals.estimated + many.totals.at_least) == ["distinct_ips", "distinct_users"]
        assert many.totals.first_seen == report.totals.first_seen
        assert many.totals.events == report.totals.events and many.omitted == report.omitted
    assert [row.id for row in report.rows] == newest(events, 20)
    reply = slack(report)
    shown = json.dumps([block for message in [reply.main, *reply.thread] for block in message.blocks])
    assert f"The index {index} is not in place" in shown and "/audit indexes" in shown
    console = Console(record=True, width=200)
    terminal(report, console)
    assert f"The index {index} is not in place" in console.export_text()


async def test_the_answer_marks_estimates_and_lower_bounds_in_slack_and_at_the_terminal(
    audit_db: PostgresAdapter,
) -> None:
    from bot.render.audit import slack, summary_text, terminal

    sampled = await answer_with(audit_db, ["security", "since=3d"], SMALL)
    exact = await answer_with(audit_db, ["security", "since=3d"], audit.Budget())
    for report, estimated in ((sampled, True), (exact, False)):
        reply = slack(report)
        blocks = json.dumps(
            [block for message in [reply.main, *reply.thread] for block in message.blocks], ensure_ascii=False
        )
        console = Console(record=True, width=250)
        terminal(report, console)
        printed = console.export_text()
        events = report.totals.events
        for shown in (blocks, printed, summary_text(report)):
            assert (f"≈{events:,}" in shown or "≈" in shown) == estimated
        if estimated:
            totals = report.totals
            marks = {name: "≈" for name in totals.estimated} | {name: "≥" for name in totals.at_least}
            ips = totals.distinct_ips if marks["distinct_ips"] == "≥" else None
            line = printed.splitlines()[1]
            assert line.startswith("≈") and " events · " in line
            assert (f"≥{ips:,} IPs" in line) if ips is not None else ("≈" in line.split(" · ")[2])
            assert "estimated from a sample" in printed and "estimated from a sample" in blocks
            assert f"from a sample of {report.estimate.sample_rows:,} matching rows" in printed  # type: ignore[union-attr]
            assert "the rows listed are exact" in blocks
        else:
            assert "≥" not in printed and "estimated" not in printed
