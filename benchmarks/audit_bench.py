"""Benchmark /audit on a generated audit_log: each form against the runbook's SQL, and a large export.

    python -m benchmarks.audit_bench                       # both profiles, 5 million rows each
    python -m benchmarks.audit_bench --profile attack      # the credential-stuffing day only
    python -m benchmarks.audit_bench --quick               # 500,000 rows, fewer rounds

Profiles (benchmarks/audit_profiles.py): `month`, 5 M rows over 30 days; `attack`, 5 M rows of
which 2.5 M in the last 24 h (credential stuffing: a third of logins failing, thousands of
addresses). On each, every form is timed against the runbook's own SQL (psql) on the same data,
first without the reviewed indexes (only the primary key), then with exactly the shipped
commands/audit_indexes.sql. Figures are medians with their spread [25th-75th percentile]. The
export is timed on the month profile. It prints figures and asserts nothing.

Each profile is generated (INSERT ... SELECT generate_series, seeded) into a database of its own
on the local server, and dropped at the end unless --keep (a kept one is reused when it looks right).
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from adapters.postgres import PostgresAdapter
from benchmarks.audit_profiles import PROFILES, SPAN_DAYS, USERS, Case, Profile, cases
from commands import audit
from commands.audit_export import export
from commands.audit_indexes import index_file_text, parse_index_file
from sandbox.platform_db import AUDIT_LOG_DDL, drop_database, ensure_database

SERVER = "postgresql://postgres@127.0.0.1:5432"
STATEMENT_TIMEOUT = 60.0


# ---------------------------------------------------------------- the table


async def prepare(dsn: str, profile: Profile, rows: int, regenerate: bool) -> None:
    """Generate the table (unless an identical one is there) with its primary key alone, analyzed."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET statement_timeout = 0")
        existing = await conn.fetchval("SELECT to_regclass('audit_log') IS NOT NULL")
        count = await conn.fetchval("SELECT count(*) FROM audit_log") if existing else 0
        newest = await conn.fetchval("SELECT now() - max(timestamp) FROM audit_log") if existing else None
        # A kept table an hour old has its attack day sliding out of the window: make it again.
        stale = newest is None or newest.total_seconds() > 3600
        if regenerate or stale or count != profile.expected_rows(rows):
            print(f"generating {rows:,} rows ({profile.name}) ...", flush=True)
            started = time.perf_counter()
            await conn.execute("DROP TABLE IF EXISTS audit_log")
            await conn.execute(AUDIT_LOG_DDL.split(";")[0])  # the table alone: the indexes come from the file
            await profile.generate(conn, rows)
            print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
        await set_indexes(conn, shipped=False)
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('audit_log'))")
        print(f"  table: {size}", flush=True)
    finally:
        await conn.close()


async def set_indexes(conn: asyncpg.Connection, shipped: bool) -> None:
    """Leave exactly the shipped indexes (or none but the primary key), then VACUUM ANALYZE."""
    started = time.perf_counter()
    await conn.execute("SET statement_timeout = 0")
    await conn.execute("SET maintenance_work_mem = '512MB'")
    statements = parse_index_file(index_file_text())[1] if shipped else []
    # Anything else would skew the plans (an index left over from an earlier file, say).
    for record in await conn.fetch(
        "SELECT indexrelid::regclass::text AS name FROM pg_index"
        " WHERE indrelid = 'audit_log'::regclass AND NOT indisprimary"
    ):
        if record["name"] not in {item.name for item in statements}:
            await conn.execute(f'DROP INDEX "{record["name"]}"')
    for item in statements:
        await conn.execute(item.sql)
    await conn.execute("VACUUM (ANALYZE) audit_log")
    what = "shipped indexes" if shipped else "primary key only"
    print(f"  {what}, VACUUM ANALYZE: {time.perf_counter() - started:.0f} s", flush=True)


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    """Times of repeated runs, in ms."""

    times: list[float]

    @property
    def median(self) -> float:
        """Return the median."""
        return statistics.median(self.times)

    def spread(self) -> str:
        """Write the 25th and 75th percentiles."""
        if len(self.times) < 4:
            return f"[{min(self.times):,.0f}-{max(self.times):,.0f}]"
        low, _, high = statistics.quantiles(self.times, n=4)
        return f"[{low:,.0f}-{high:,.0f}]"

    def text(self) -> str:
        """Write the median with its spread."""
        return f"{self.median:,.0f} ms {self.spread()}"


async def time_calls(call: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 2) -> Timing:
    """Time `call` `repeat` times after a warm-up."""
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return Timing(times)


def time_psql(dsn: str, sql: str, repeat: int, warmup: int = 0) -> Timing:
    """Run the runbook's SQL through psql with \\timing, output discarded (after `warmup` runs)."""
    script = "\\timing on\n\\o /dev/null\n" + (sql + "\n") * (repeat + warmup)
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    times = [float(value) for value in re.findall(r"^Time: ([\d.]+) ms", done.stdout, re.MULTILINE)]
    return Timing(times[warmup:])


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


@dataclass
class Measured:
    """One form on one table: /audit and the runbook's SQL, and what /audit answered."""

    case: Case
    chatops: Timing
    runbook: Timing
    answer: str


async def bench_forms(dsn: str, profile: str, repeat: int, psql_repeat: int) -> list[Measured]:
    """Time each form beside the runbook's SQL through psql, on the table as it is now."""
    db = PostgresAdapter("postgres", dsn, timeout=10)
    measured: list[Measured] = []
    try:
        async with db.connection() as conn:
            middle = await conn.fetchval("SELECT max(id) / 2 FROM audit_log")
            request_id = await conn.fetchval(
                "SELECT details->>'request_id' FROM audit_log WHERE id = $1", middle
            )
        print()
        print(f"{'form':<32} {'/audit median [IQR]':>22} {'runbook via psql':>22} {'ratio':>7}  answer")
        for case in cases(profile, request_id):
            request = audit.parse(case.tokens)
            assert isinstance(request, audit.AuditQuery)
            report: Any = None

            async def run_form(request: audit.AuditQuery = request) -> None:
                nonlocal report
                report = await audit.run(db, request, STATEMENT_TIMEOUT)

            # Turn about, one run each: a load that comes and goes weighs on both alike.
            await run_form()
            time_psql(dsn, case.runbook_sql, 1)  # both warm the cache once, untimed
            runbook, chatops = Timing([]), Timing([])
            for _ in range(repeat):
                chatops.times += (await time_calls(run_form, 1, warmup=0)).times
                if len(runbook.times) < psql_repeat:
                    runbook.times += time_psql(dsn, case.runbook_sql, 1).times
            if not isinstance(report, audit.AuditReport):
                print(f"{case.label:<32} failed: {report}")
                continue
            answer = _describe(report)
            measured.append(Measured(case, chatops, runbook, answer))
            print(
                f"{case.label:<32} {chatops.text():>22} {runbook.text():>22}"
                f" {chatops.median / runbook.median:>6.2f}x  {answer}",
                flush=True,
            )
        print(f"load average during the run: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
        print()
        print("plans (the rows query of each form):")
        for case in cases(profile, request_id):
            print(f"  {case.label:<32} {await plan_of(db, case.tokens)}")
    finally:
        await db.aclose()
    return measured


def _describe(report: audit.AuditReport) -> str:
    """Say in a few words what the answer counted and how (exact, estimated, without its index)."""
    totals = report.totals
    marks = {name: "≈" for name in totals.estimated} | {name: "≥" for name in totals.at_least}
    text = (
        f"{marks.get('events', '')}{totals.events:,} events, {marks.get('distinct_users', '')}"
        f"{totals.distinct_users:,} users, {marks.get('distinct_ips', '')}{totals.distinct_ips:,} IPs"
    )
    if report.estimate is not None:
        text += f"; breakdowns from 1 in {1 / report.estimate.fraction:,.0f}"
    if report.missing_index is not None:
        text += "; says which index is missing"
    return text


def summaries(profile: str, without: list[Measured], shipped: list[Measured]) -> list[str]:
    """Return the SUMMARY lines: each form against the runbook, with and without the indexes."""
    lines = []
    bare = {item.case.label: item for item in without}
    for item in shipped:
        figure = f"{item.chatops.text()} vs {item.runbook.text()}"
        other = bare.get(item.case.label)
        if other is not None:
            figure += (
                f"; no indexes: {other.chatops.text()} vs {other.runbook.text()}"
                f" ({other.chatops.median / other.runbook.median:.2f}x)"
            )
        lines.append(f"SUMMARY\t/audit {item.case.label}, {profile}: chatops vs the runbook's SQL\t{figure}")
    return lines


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
    parser.add_argument(
        "--profile", choices=("month", "attack", "both"), default="both", help="the table(s) to time on"
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows to generate (default 5 million)")
    parser.add_argument(
        "--export-rows", type=int, default=1_000_000, help="rows to export (default 1 million)"
    )
    parser.add_argument("--repeat", type=int, default=21, help="timed runs of each form (default 21)")
    parser.add_argument(
        "--psql-repeat", type=int, default=7, help="timed runs of each runbook query (default 7)"
    )
    parser.add_argument(
        "--scan-repeat", type=int, default=5, help="timed runs of each, without the indexes (default 5)"
    )
    parser.add_argument("--server", default=SERVER, help=f"PostgreSQL server (default {SERVER})")
    parser.add_argument(
        "--regenerate", action="store_true", help="rebuild a kept table even if it looks right"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases (reused by the next run)")
    parser.add_argument("--no-export", action="store_true", help="time the forms only")
    parser.add_argument("--no-bare", action="store_true", help="skip the runs without the indexes")
    parser.add_argument("--export-only", action="store_true", help="time the export only (month profile)")
    parser.add_argument(
        "--quick", action="store_true", help="500,000 rows, an export of 100,000, fewer rounds, own databases"
    )
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--export-child", choices=("csv", "json"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--slack-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_child:
        export_child(args.dsn, args.export_child, args.export_rows, args.output, args.slack_url)
        return 0
    suffix = ""
    if args.quick:
        args.rows, args.export_rows, args.repeat, args.psql_repeat, args.scan_repeat = (
            500_000,
            100_000,
            7,
            3,
            3,
        )
        suffix = "_quick"
    names = ["month", "attack"] if args.profile == "both" else [args.profile]
    if args.export_only:
        names = ["month"]
    lines: list[str] = []
    for name in names:
        profile = PROFILES[name]
        dsn = f"{args.server.rstrip('/')}/{profile.database}{suffix}"
        print(f"\n/audit benchmark, profile {name}: {args.rows:,} rows, {profile.description};"
              f" {USERS:,} users; PostgreSQL at {dsn}", flush=True)  # fmt: skip
        try:
            asyncio.run(prepare(dsn, profile, args.rows, args.regenerate))
            without: list[Measured] = []
            if not args.export_only and not args.no_bare:
                print("\nwithout the reviewed indexes (primary key only):")
                without = asyncio.run(bench_forms(dsn, name, args.scan_repeat, args.scan_repeat))
            asyncio.run(_index(dsn))
            if not args.export_only:
                print("\nwith the shipped indexes (commands/audit_indexes.sql):")
                shipped = asyncio.run(bench_forms(dsn, name, args.repeat, args.psql_repeat))
                lines += summaries(name, without, shipped)
            if name == "month" and not args.no_export:
                bench_export(dsn, min(args.export_rows, args.rows))
        finally:
            if not args.keep:
                asyncio.run(drop_database(dsn))
    for line in lines:
        print(line)
    return 0


async def _index(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await set_indexes(conn, shipped=True)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
