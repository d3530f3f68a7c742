"""Benchmark /audit on a generated audit_log: each form against the runbook's SQL, and a large export.

    python -m benchmarks.audit_bench                      # 5 million rows, export of 1 million
    python -m benchmarks.audit_bench --rows 200000 --export-rows 50000   # a quick run

It prints figures and asserts nothing. The database (default chatops_bench_audit on the local
server) is generated with one INSERT ... SELECT generate_series, indexed with the shipped
commands/audit_indexes.sql, and kept for the next run (--regenerate to rebuild, --drop to remove).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from adapters.postgres import PostgresAdapter
from commands import audit
from commands.audit_export import export
from commands.audit_indexes import index_file_text, parse_index_file
from sandbox.platform_db import AUDIT_LOG_DDL, drop_database, ensure_database

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/chatops_bench_audit"
STATEMENT_TIMEOUT = 30.0
USERS = 5000
SPAN_DAYS = 30
ATTACKED = "user42"

# One statement generates every row: time-ordered over SPAN_DAYS (an append-only log), users
# skewed (a few very active), the sandbox's mix of actions, about 8 % of logins failing.
GENERATE = """
INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
SELECT ts, action, md5('user' || u)::uuid, 'user' || u,
       CASE WHEN u % 10 = 0 THEN ('2001:db8:' || to_hex(u) || '::' || (1 + g % 3))::inet
            ELSE ('10.' || (u / 250) || '.' || (u % 250) || '.' || (1 + g % 3))::inet END,
       jsonb_build_object('request_id', md5(g::text), 'trace_id', md5('t' || g),
                          'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0')
       || CASE action
            WHEN 'LOGIN' THEN CASE WHEN r3 < 0.08
                 THEN '{"success": false, "method": "password", "reason": "invalid_password"}'::jsonb
                 ELSE '{"success": true, "method": "password"}'::jsonb END
            WHEN 'MFA_CHALLENGE_FAILED' THEN jsonb_build_object(
                 'reason', (ARRAY['invalid_code', 'expired_code', 'replayed_code'])[1 + g % 3])
            WHEN 'RATE_LIMIT_EXCEEDED' THEN
                 '{"reason": "login_attempts_exceeded", "endpoint": "/api/v1/auth/login", "limit": 5}'::jsonb
            WHEN 'PERMISSION_DENIED' THEN jsonb_build_object(
                 'required_permission', 'projects:delete', 'resource_id', md5('r' || g)::uuid)
            ELSE '{}'::jsonb END
FROM (
    SELECT g, r3,
           now() - make_interval(days => $2) + make_interval(secs => g * ($2 * 86400.0 / $1)) AS ts,
           floor($3 * r1 * r1)::int AS u,
           CASE WHEN r2 < 0.30 THEN 'LOGIN' WHEN r2 < 0.40 THEN 'LOGOUT'
                WHEN r2 < 0.52 THEN 'MFA_CHALLENGE_SUCCESS' WHEN r2 < 0.55 THEN 'MFA_CHALLENGE_FAILED'
                WHEN r2 < 0.62 THEN 'PROJECT_CREATE' WHEN r2 < 0.72 THEN 'PROJECT_UPDATE'
                WHEN r2 < 0.74 THEN 'PROJECT_DELETE' WHEN r2 < 0.86 THEN 'FILE_UPLOAD'
                WHEN r2 < 0.94 THEN 'FILE_DOWNLOAD' WHEN r2 < 0.97 THEN 'PERMISSION_DENIED'
                WHEN r2 < 0.99 THEN 'RATE_LIMIT_EXCEEDED' ELSE 'PASSWORD_CHANGE' END AS action
    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3 FROM generate_series(1, $1) AS g) AS drawn
) AS rows
"""

# A brute-force attack in the last hour, as the sandbox seeds one: failed logins from six addresses.
ATTACK = """
INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
SELECT now() - make_interval(secs => 3600 - i * 10), 'LOGIN', md5('user42')::uuid, 'user42',
       (ARRAY['192.168.1.100', '185.220.101.42', '45.155.205.233', '2a03:b0c0:3:d0::1a51',
              '203.0.113.9', '198.51.100.77'])[1 + i % 6]::inet,
       jsonb_build_object('request_id', md5('attack' || i), 'success', false, 'reason', 'invalid_password')
FROM generate_series(1, 300) AS i
"""


@dataclass
class Case:
    """One question: /audit's arguments, and the runbook's SQL for the same question."""

    label: str
    tokens: list[str]
    runbook_sql: str


def cases(request_id: str) -> list[Case]:
    """Return the questions asked of the generated table (the user ids are md5-derived, as generated)."""
    heavy, medium = "user0", "user700"
    medium_id = str(uuid.UUID(_md5(medium)))
    heavy_ip = "10.0.1.1"  # user1 (user0, like every tenth user, comes from IPv6)
    return [
        Case(
            "user <username> (busiest user)",
            ["user", heavy],
            f"SELECT action, ip_address, timestamp, details FROM audit_log WHERE username = '{heavy}'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
        Case(
            "user <user id>",
            ["user", medium_id],
            f"SELECT action, ip_address, timestamp, details FROM audit_log WHERE user_id = '{medium_id}'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
        Case(
            "ip <IPv4 address>",
            ["ip", heavy_ip],
            "SELECT action, user_id, username, timestamp, details FROM audit_log"
            f" WHERE ip_address = '{heavy_ip}' AND timestamp > NOW() - INTERVAL '24 hours'"
            " ORDER BY timestamp DESC;",
        ),
        Case(
            "ip <IPv6 address>",
            ["ip", "2001:db8:0::1"],
            "SELECT action, user_id, username, timestamp, details FROM audit_log"
            " WHERE ip_address = '2001:db8:0::1' AND timestamp > NOW() - INTERVAL '24 hours'"
            " ORDER BY timestamp DESC;",
        ),
        Case(
            "ip <CIDR /24>",
            ["ip", "10.1.1.0/24"],
            "SELECT action, user_id, username, timestamp, details FROM audit_log"
            " WHERE ip_address <<= '10.1.1.0/24' AND timestamp > NOW() - INTERVAL '24 hours'"
            " ORDER BY timestamp DESC;",
        ),
        Case(
            "ip <CIDR /16>",
            ["ip", "10.1.0.0/16"],
            "SELECT action, user_id, username, timestamp, details FROM audit_log"
            " WHERE ip_address <<= '10.1.0.0/16' AND timestamp > NOW() - INTERVAL '24 hours'"
            " ORDER BY timestamp DESC;",
        ),
        Case(
            "request <request id>",
            ["request", request_id, "since=30d"],
            f"SELECT * FROM audit_log WHERE details::text LIKE '%{request_id}%' ORDER BY timestamp;",
        ),
        Case(
            "failed-logins",
            ["failed-logins"],
            "SELECT username, COUNT(*) as failed_attempts, array_agg(DISTINCT ip_address) as ips"
            " FROM audit_log WHERE action = 'LOGIN' AND details->>'success' = 'false'"
            " AND timestamp > NOW() - INTERVAL '24 hours' GROUP BY username HAVING COUNT(*) > 5"
            " ORDER BY failed_attempts DESC;",
        ),
        Case(
            "mfa",
            ["mfa"],
            "SELECT user_id, username, ip_address, timestamp, details->>'reason' as failure_reason"
            " FROM audit_log WHERE action = 'MFA_CHALLENGE_FAILED'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
        Case(
            "security",
            ["security"],
            "SELECT action, user_id, ip_address, timestamp, details FROM audit_log"
            " WHERE action IN ('LOGIN', 'MFA_CHALLENGE_FAILED', 'RATE_LIMIT_EXCEEDED', 'PERMISSION_DENIED')"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
    ]


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------- the table


async def prepare(dsn: str, rows: int, regenerate: bool) -> None:
    """Generate the table (unless an identical one is there), index it with the shipped file, analyze."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET statement_timeout = 0")
        existing = await conn.fetchval("SELECT to_regclass('audit_log') IS NOT NULL")
        count = await conn.fetchval("SELECT count(*) FROM audit_log") if existing else 0
        if regenerate or count != rows + 300:
            print(f"generating {rows:,} rows ...", flush=True)
            started = time.perf_counter()
            await conn.execute("DROP TABLE IF EXISTS audit_log")
            await conn.execute(AUDIT_LOG_DDL.split(";")[0])  # the table alone: the indexes come from the file
            await conn.execute("SELECT setseed(0.42)")
            await conn.execute(GENERATE, rows, SPAN_DAYS, USERS)
            await conn.execute(ATTACK)
            print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '512MB'")
        shipped = parse_index_file(index_file_text())[1]
        # Exactly the shipped indexes: one left over from an earlier file would skew the plans.
        for record in await conn.fetch(
            "SELECT indexrelid::regclass::text AS name FROM pg_index"
            " WHERE indrelid = 'audit_log'::regclass AND NOT indisprimary"
        ):
            if record["name"] not in {item.name for item in shipped}:
                await conn.execute(f'DROP INDEX "{record["name"]}"')
        for item in shipped:
            await conn.execute(item.sql)
        await conn.execute("VACUUM (ANALYZE) audit_log")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('audit_log'))")
        print(
            f"  indexes and VACUUM ANALYZE in {time.perf_counter() - started:.0f} s;"
            f" table with its indexes: {size}"
        )
    finally:
        await conn.close()


# ---------------------------------------------------------------- timing


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 2) -> tuple[float, float]:
    """Time `call` `repeat` times after a warm-up; return the median and the 95th percentile in ms."""
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def psql_median_ms(dsn: str, sql: str, repeat: int) -> float:
    """Run the runbook's SQL through psql with \\timing, output discarded; return the median in ms."""
    script = "\\timing on\n\\o /dev/null\n" + (sql + "\n") * (repeat + 1)
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    times = [float(value) for value in re.findall(r"^Time: ([\d.]+) ms", done.stdout, re.MULTILINE)]
    return statistics.median(times[1:])  # the first run warms the cache


async def plan_of(db: PostgresAdapter, tokens: list[str]) -> str:
    """Say how the form's row query reaches the rows (the index scans of its plan)."""
    request = audit.parse(tokens)
    assert isinstance(request, audit.AuditQuery)
    params = audit.Params()
    where = audit.where_clause(request.filter, request.since, params)
    async with db.read_only(STATEMENT_TIMEOUT) as conn:
        await audit.prepare_session(conn, STATEMENT_TIMEOUT)
        lines = [
            row[0]
            for row in await conn.fetch(f"EXPLAIN SELECT * FROM audit_log WHERE {where}", *params.values)
        ]
    scans = [re.sub(r"\s+\(cost.*", "", line).strip(" ->") for line in lines if "Scan" in line]
    return "; ".join(scans)


async def bench_forms(dsn: str, repeat: int, psql_repeat: int) -> None:
    """Print each form's median latency beside the runbook's SQL through psql."""
    db = PostgresAdapter("postgres", dsn, timeout=10)
    try:
        async with db.connection() as conn:
            middle = await conn.fetchval("SELECT max(id) / 2 FROM audit_log")
            request_id = await conn.fetchval(
                "SELECT details->>'request_id' FROM audit_log WHERE id = $1", middle
            )
        print()
        print(
            f"{'form':<32} {'/audit median':>13} {'p95':>8} {'rows':>7} {'runbook via psql':>17} {'ratio':>8}"
        )
        medians: dict[str, float] = {}
        request_ratio = None
        for case in cases(request_id):
            request = audit.parse(case.tokens)
            assert isinstance(request, audit.AuditQuery)
            report: Any = None

            async def run_form(request: audit.AuditQuery = request) -> None:
                nonlocal report
                report = await audit.run(db, request, STATEMENT_TIMEOUT)

            median, p95 = await median_ms(run_form, repeat)
            if not isinstance(report, audit.AuditReport):
                print(f"{case.label:<32} failed: {report}")
                continue
            runbook = psql_median_ms(dsn, case.runbook_sql, psql_repeat)
            ratio = runbook / median
            medians[case.label] = median
            if case.tokens[:1] == ["request"]:
                request_ratio = ratio
            print(
                f"{case.label:<32} {median:>10.1f} ms {p95:>5.1f} ms {report.totals.events:>7,}"
                f" {runbook:>14.1f} ms {ratio:>7.1f}x",
                flush=True,
            )
        print(f"load average during the run: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
        print()
        print("plans (the rows query of each form):")
        for case in cases(request_id):
            print(f"  {case.label:<32} {await plan_of(db, case.tokens)}")
        if medians:
            slowest = max(medians, key=medians.__getitem__)
            print(f"SUMMARY\t/audit slowest form median ({slowest})\t{medians[slowest]:.0f} ms")
        if request_ratio is not None:
            print(
                f"SUMMARY\t/audit request vs the runbook's details::text LIKE\t{request_ratio:,.0f}x faster"
            )
    finally:
        await db.aclose()


# ---------------------------------------------------------------- export


def _rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


BENCH_TOKEN = "xoxb-benchmark"
BENCH_CHANNEL = "C0BENCHMRK"
# The fake Slack Web API in a process of its own, so what it stores is not counted as the bot's.
FAKE_SLACK_PROCESS = f"""
import json, sys
from tests.fakes import FakeSlack
fake = FakeSlack(tokens={{{BENCH_TOKEN!r}}}).start()
fake.add_channel({BENCH_CHANNEL!r}, "benchmark")
print(fake.url, flush=True)
sys.stdin.read()
sizes = [len(f.content or b"") for f in fake.files.values() if f.completed]
print(json.dumps({{"violations": [str(v) for v in fake.violations], "uploaded": sizes}}), flush=True)
fake.stop()
"""


async def upload_to_slack(slack_url: str, path: Path) -> None:
    """Upload a spooled export the way the bot does, into a thread of the benchmark's channel."""
    # Imported here, so the plain export's memory figures do not carry the Slack client's.
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.render.common import Upload
    from bot.slack.posting import upload_from_disk

    client = AsyncWebClient(token=BENCH_TOKEN, base_url=slack_url, timeout=30)
    upload = Upload(filename=path.name, content=b"", title="benchmark export", path=path)
    await upload_from_disk(client, BENCH_CHANNEL, None, upload)


def export_child(dsn: str, fmt: str, rows: int, output: str, slack_url: str | None = None) -> None:
    """Run one export in this (fresh) process and print its figures as JSON (peak RSS included).

    With `slack_url`, the file is then uploaded to that (fake) Slack as the bot uploads exports.
    """
    samples: list[int] = []
    upload_seconds: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_rss_kb())
            stop.wait(0.05)

    async def main() -> audit.AuditExport:
        db = PostgresAdapter("postgres", dsn, timeout=10)
        request = audit.parse(
            ["export", fmt, f"since={SPAN_DAYS}d", f"limit={rows}"], audit.Limits(export_max_rows=rows)
        )
        assert isinstance(request, audit.ExportRequest)
        try:
            with open(output, "wb") as sink:  # noqa: ASYNC230  (the export writes to it batch by batch)
                result = await export(
                    db, request, sink, statement_timeout=STATEMENT_TIMEOUT, destination=output
                )
        finally:
            await db.aclose()
        assert isinstance(result, audit.AuditExport), result
        if slack_url is not None:
            started = time.perf_counter()
            await upload_to_slack(slack_url, Path(output))
            upload_seconds.append(time.perf_counter() - started)
        return result

    start_kb = _rss_kb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = asyncio.run(main())
    stop.set()
    sampler.join()
    quarter = max(1, len(samples) // 4)
    print(
        json.dumps(
            {
                "rows": result.rows,
                "bytes": result.size_bytes,
                "seconds": result.duration_ms / 1000,
                "rows_per_second": result.rows_per_second,
                "rss_start_mb": start_kb / 1024,
                "rss_first_quarter_mb": max(samples[:quarter]) / 1024,
                "rss_last_quarter_mb": max(samples[-quarter:]) / 1024,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "upload_seconds": upload_seconds[0] if upload_seconds else None,
            }
        )
    )


class FakeSlackProcess:
    """Run the fake Slack in a child process; on exit, fail loudly on any request it rejected."""

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_SLACK_PROCESS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def __exit__(self, *exc_info: object) -> None:
        out, _ = self.process.communicate(input="", timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        if report["violations"]:
            raise RuntimeError(f"the fake Slack rejected requests: {report['violations']}")
        print(f"  (the fake Slack received {len(report['uploaded'])} upload(s), {report['uploaded']} bytes)")


def bench_export(dsn: str, rows: int) -> None:
    """Export `rows` rows as CSV and as JSON, each in a fresh process, and print rows/s and memory."""
    print()
    print(f"export of {rows:,} rows (to a file, then to a file and Slack; fresh process each):")
    print(
        f"  {'format':<11} {'rows/s':>9} {'seconds':>8} {'size':>9} {'RSS start':>10} {'first 1/4':>10}"
        f" {'last 1/4':>9} {'peak RSS':>9}"
    )
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as folder, FakeSlackProcess() as slack_url:
        for fmt, to_slack in (("csv", False), ("json", False), ("csv", True)):
            label = f"{fmt} + Slack" if to_slack else fmt
            output = str(Path(folder) / f"export-{label.replace(' + ', '-')}.{fmt}")
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.audit_bench", "--export-child", fmt, "--dsn", dsn,
                 "--export-rows", str(rows), "--output", output,
                 *(["--slack-url", slack_url] if to_slack else [])],
                capture_output=True, text=True, check=False, timeout=3600,
            )  # fmt: skip
            if done.returncode != 0:
                print(f"  {label:<11} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            summary.append(
                f"SUMMARY\t/audit export of {rows:,} rows as {label}: rows/s, peak memory"
                f"\t{figures['rows_per_second']:,.0f} rows/s, {figures['peak_rss_mb']:.0f} MB"
            )
            print(
                f"  {label:<11} {figures['rows_per_second']:>9,.0f} {figures['seconds']:>8.1f}"
                f" {figures['bytes'] / 1e6:>6.0f} MB {figures['rss_start_mb']:>7.0f} MB"
                f" {figures['rss_first_quarter_mb']:>7.0f} MB {figures['rss_last_quarter_mb']:>6.0f} MB"
                f" {figures['peak_rss_mb']:>6.0f} MB",
                flush=True,
            )
            if figures["upload_seconds"] is not None:
                print(f"  {'':<11} then uploaded to the fake Slack in {figures['upload_seconds']:.1f} s")
        # For scale: the runbook's own export, PostgreSQL writing the CSV itself (COPY TO STDOUT).
        started = time.perf_counter()
        copy = f"COPY (SELECT * FROM audit_log ORDER BY timestamp, id LIMIT {rows}) TO STDOUT WITH CSV HEADER"
        with open(Path(folder) / "copy.csv", "wb") as sink:
            subprocess.run(["psql", "-X", "-q", dsn, "-c", copy], stdout=sink, check=True, timeout=3600)
        seconds = time.perf_counter() - started
        print(f"  runbook's psql COPY ... CSV: {rows / seconds:,.0f} rows/s ({seconds:.1f} s) for comparison")
    for line in summary:
        print(line)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.audit_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows to generate (default 5 million)")
    parser.add_argument(
        "--export-rows", type=int, default=1_000_000, help="rows to export (default 1 million)"
    )
    parser.add_argument("--repeat", type=int, default=21, help="timed runs of each form (default 21)")
    parser.add_argument(
        "--psql-repeat", type=int, default=5, help="timed runs of each runbook query (default 5)"
    )
    parser.add_argument(
        "--dsn", default=DEFAULT_DSN, help=f"database to generate into (default {DEFAULT_DSN})"
    )
    parser.add_argument("--regenerate", action="store_true", help="rebuild the table even if it looks right")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--no-export", action="store_true", help="time the forms only")
    parser.add_argument("--export-only", action="store_true", help="time the export only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="500,000 rows and an export of 100,000, in a database of their own",
    )
    parser.add_argument("--export-child", choices=("csv", "json"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--slack-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.export_rows, args.repeat = 500_000, 100_000, 7
        args.dsn = args.dsn.rsplit("/", 1)[0] + "/chatops_bench_audit_quick"
    if args.export_child:
        export_child(args.dsn, args.export_child, args.export_rows, args.output, args.slack_url)
        return 0
    print(
        f"/audit benchmark: {args.rows:,} rows over {SPAN_DAYS} days, {USERS:,} users,"
        f" PostgreSQL at {args.dsn}"
    )
    asyncio.run(prepare(args.dsn, args.rows, args.regenerate))
    if not args.export_only:
        asyncio.run(bench_forms(args.dsn, args.repeat, args.psql_repeat))
    if not args.no_export:
        bench_export(args.dsn, min(args.export_rows, args.rows))
    if args.drop:
        asyncio.run(drop_database(args.dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
