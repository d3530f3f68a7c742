"""Log reading for /triage: lookups by id across plain and .gz files, time windows, the logs check.

Log files are written in tmp_path; the audit rows come from the sandbox's real platform database.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres import PostgresAdapter
from bot.config import Settings
from commands import logsearch
from commands.triage import (
    LogsArgs,
    LookupArgs,
    TriageArgs,
    TriageSources,
    parse_request_id,
    parse_trace_id,
    run_logs,
    run_lookup,
    run_triage,
)
from commands.triage_checklist import parse_checklist
from sandbox.manager import SandboxStatus
from tests.conftest import make_settings

NOW = datetime.now(UTC).replace(microsecond=0)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REQUEST = "9d2c1f0e8b7a46c5b4a3928171605f4e"


def line(when: datetime, **fields: Any) -> str:
    """Write one JSON log line as the platform's backend does."""
    record = {"timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **fields}
    return json.dumps(record, separators=(",", ":")) + "\n"


def request_line(when: datetime, path: str, status: int, trace: str | None = None, **extra: Any) -> str:
    level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    return line(
        when,
        level=level,
        event="http_request",
        method="GET",
        path=path,
        status_code=status,
        duration_ms=12.5,
        request_id=extra.pop("request_id", os.urandom(16).hex()),
        trace_id=trace or os.urandom(16).hex(),
        **extra,
    )


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Three generations of logs: a .gz from two days ago, a rotated file from an hour ago, today's."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old = NOW - timedelta(days=2)
    with gzip.open(logs / "app.log.2.gz", "wt") as handle:
        handle.write(request_line(old, "/api/v1/projects", 200, TRACE, request_id=REQUEST))
        handle.write("Traceback (most recent call last): not JSON " + TRACE + "\n")
        for i in range(50):
            handle.write(request_line(old + timedelta(seconds=i), "/api/v1/uploads", 500, error="disk full"))
    os.utime(logs / "app.log.2.gz", (old.timestamp(), old.timestamp()))
    hour = NOW - timedelta(hours=1)
    with (logs / "app.log.1").open("w") as handle:
        handle.write(request_line(hour, "/api/v1/auth/login", 401, TRACE))
        handle.write(line(hour + timedelta(seconds=1), level="error", event="worker_crashed", trace_id=TRACE))
    os.utime(logs / "app.log.1", (hour.timestamp() + 1, hour.timestamp() + 1))
    with (logs / "app.log").open("w") as handle:
        handle.write("plain text banner, not JSON\n")
        for i in range(120, 0, -1):  # the last ten minutes, one line each five seconds
            when = NOW - timedelta(seconds=5 * i)
            status = 500 if i % 10 == 0 else 200
            path = "/api/v1/projects" if i % 20 == 0 else "/api/v1/uploads"
            handle.write(
                request_line(when, path, status, error="KeyError: 'owner_id'" if status == 500 else None)
            )
        handle.write(
            request_line(NOW - timedelta(seconds=2), "/api/v1/projects/7", 503, TRACE, request_id=REQUEST)
        )
        handle.write("{broken json\n")
        handle.write(json.dumps({"level": "error", "event": "no timestamp"}) + "\n")
    return logs


def patterns(log_dir: Path) -> list[str]:
    return [str(log_dir / "*.log*")]


# --- lookups --------------------------------------------------------------------------------


async def test_trace_lookup_finds_every_line_across_plain_and_gz_files_in_time_order(log_dir: Path) -> None:
    report = await run_lookup(LookupArgs(kind="trace", id=TRACE), patterns(log_dir), None, timeout=2)
    times = [entry.time for entry in report.entries]
    assert report.log_lines == 4
    assert times == sorted(times)  # type: ignore[type-var]
    assert [entry.source for entry in report.entries] == ["app.log.2.gz", "app.log.1", "app.log.1", "app.log"]
    assert report.entries[-1].summary == "GET /api/v1/projects/7 → 503 in 12.5 ms"
    assert report.entries[2].summary == "worker_crashed"
    # The Traceback line mentions the id but is not JSON: counted, not shown.
    assert report.scan.non_json == 1
    assert report.scan.files == 3
    # No database given: the audit log could not be searched, and the report says why.
    assert report.audit_problem == "error: the platform database is not configured"
    assert not report.ok


async def test_request_lookup_merges_log_lines_and_audit_rows_in_time_order(
    sandbox: SandboxStatus, tmp_path: Path
) -> None:
    settings = make_settings()
    conn = await asyncpg.connect(settings.platform_database_url)
    try:
        row = await conn.fetchrow(
            "SELECT timestamp, details->>'request_id' AS request_id, details->>'trace_id' AS trace_id "
            "FROM audit_log WHERE action = 'PERMISSION_DENIED' ORDER BY timestamp DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert row is not None
    when: datetime = row["timestamp"]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "api.log").write_text(
        request_line(when - timedelta(milliseconds=5), "/api/v1/projects/9", 200, row["trace_id"])
        + request_line(
            when + timedelta(milliseconds=3),
            "/api/v1/projects/9",
            403,
            row["trace_id"],
            request_id=row["request_id"],
        )
    )
    database = PostgresAdapter("postgres", settings.platform_database_url, 2.0)
    try:
        by_request = await run_lookup(
            LookupArgs(kind="request", id=row["request_id"]), [str(logs / "*.log")], database, timeout=5
        )
        by_trace = await run_lookup(
            LookupArgs(kind="trace", id=row["trace_id"]), [str(logs / "*.log")], database, timeout=5
        )
    finally:
        await database.aclose()
    assert (by_request.log_lines, by_request.audit_rows) == (1, 1)
    assert [entry.source for entry in by_request.entries] == ["audit_log", "api.log"]
    assert by_request.entries[0].summary.startswith("PERMISSION_DENIED ")
    assert by_request.ok
    assert (by_trace.log_lines, by_trace.audit_rows) == (2, 1)
    assert [entry.source for entry in by_trace.entries] == ["api.log", "audit_log", "api.log"]


async def test_lookup_with_the_database_down_still_reads_the_logs(log_dir: Path) -> None:
    dead = PostgresAdapter("postgres", "postgresql://postgres@127.0.0.1:1/platform", 1.0)
    try:
        report = await run_lookup(LookupArgs(kind="request", id=REQUEST), patterns(log_dir), dead, timeout=1)
    finally:
        await dead.aclose()
    assert report.log_lines == 2
    assert report.audit_problem is not None and report.audit_problem.startswith("refused")


def test_search_streams_lines_cut_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsearch, "CHUNK_BYTES", 97)  # far smaller than a line: every line is cut
    path = tmp_path / "small.log"
    lines = [
        request_line(NOW + timedelta(seconds=i), "/p", 200, TRACE if i % 7 == 0 else None) for i in range(200)
    ]
    path.write_text("".join(lines))
    found = logsearch.search([path], TRACE)
    assert len(found.records) == len([text for text in lines if TRACE in text]) == 29
    assert found.stats.bytes_read == path.stat().st_size


@given(
    st.lists(st.tuples(st.booleans(), st.text('abcxyz{}": ', max_size=60)), max_size=40),
    st.integers(min_value=8, max_value=300),
    st.booleans(),
    st.integers(min_value=1, max_value=3),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_search_finds_exactly_what_grep_would(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[tuple[bool, str]],
    chunk: int,
    trailing: bool,
    processes: int,
) -> None:
    monkeypatch.setattr(logsearch, "CHUNK_BYTES", chunk)
    # With more than one process, every file is cut into ranges, wherever its lines end.
    monkeypatch.setattr(logsearch, "SPLIT_MIN_BYTES", 1)
    monkeypatch.setattr(logsearch, "SEARCH_PROCESSES", processes)
    needle = "NEEDLE42"
    text_lines = [
        json.dumps({"n": index, "text": text + (needle if has else "")})
        if index % 5
        else text + (needle if has else "")
        for index, (has, text) in enumerate(lines)
    ]
    body = "\n".join(text_lines) + ("\n" if trailing and text_lines else "")
    path = tmp_path / f"h{random.random()}.log"
    path.write_text(body)
    found = logsearch.search([path], needle)
    expected = [text for text in text_lines if needle in text]
    json_expected = [text for text in expected if logsearch.parse_line(text.encode()) is not None]
    assert [json.dumps(record.data) for record in found.records] == json_expected
    assert found.stats.non_json == len(expected) - len(json_expected)


def test_a_big_file_is_searched_in_ranges_of_whole_lines_by_forked_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logsearch, "SPLIT_MIN_BYTES", 10_000)
    monkeypatch.setattr(logsearch, "SEARCH_PROCESSES", 4)
    path = tmp_path / "big.log"
    lines = [
        request_line(NOW + timedelta(seconds=i), "/p", 200, TRACE if i % 50 == 0 else None)
        for i in range(600)
    ]
    path.write_text("".join(lines))
    body = path.read_bytes()
    ranges = logsearch._ranges(path)
    assert len(ranges) == 4
    assert ranges[0][0] == 0 and ranges[-1][1] == len(body)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(ranges))
    assert all(body[start - 1 : start] == b"\n" for start, _ in ranges[1:])  # each starts a line
    parent = os.getpid()
    found = logsearch.search([path], TRACE)
    assert os.getpid() == parent  # the children left without running the rest of the test
    assert [record.data["trace_id"] for record in found.records] == [TRACE] * 12
    assert [record.time for record in found.records] == sorted(record.time for record in found.records)
    assert [record.line for record in found.records] == list(range(12))  # numbered in file order
    assert (found.stats.files, found.stats.bytes_read, found.stats.errors) == (1, len(body), [])
    # A .gz file is read whole, by this process: gzip cannot start in the middle.
    packed = tmp_path / "big.log.1.gz"
    packed.write_bytes(gzip.compress(body))
    assert len(logsearch.search([packed], TRACE).records) == 12


def test_a_search_begun_ahead_answers_the_same_search_and_only_it(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(request_line(NOW + timedelta(seconds=i), "/p", 200, TRACE) for i in range(3)))
    logsearch.begin([path], TRACE)
    for begun_search in logsearch._begun.values():
        begun_search.wait()  # its answer kept: written after, the line below is not in it
    with path.open("a") as handle:
        handle.write(request_line(NOW + timedelta(seconds=9), "/p", 200, TRACE))
    asked = time.perf_counter()
    begun = logsearch.search([path], TRACE)
    assert len(begun.records) == 3 and begun.stats.files == 1
    assert begun.started < asked  # a lookup's duration counts the scan from when it began
    assert len(logsearch.search([path], TRACE).records) == 4
    # A search begun for other arguments is not taken (and its process is waited for).
    logsearch.begin([path], "something else")
    assert len(logsearch.search([path], TRACE).records) == 4
    assert not logsearch._begun


async def test_a_lookup_begun_at_the_terminal_is_the_lookup_run(log_dir: Path) -> None:
    args = LookupArgs(kind="trace", id=TRACE)
    expected = await run_lookup(args, patterns(log_dir), None, timeout=1)
    logsearch.begin(logsearch.expand(patterns(log_dir)), args.needles())  # as bot/cli/main.py does
    assert logsearch._begun
    begun = await run_lookup(args, patterns(log_dir), None, timeout=1)
    assert not logsearch._begun
    assert begun.model_dump(exclude={"duration_ms"}) == expected.model_dump(exclude={"duration_ms"})


def test_what_a_search_process_raises_is_raised_here(tmp_path: Path) -> None:
    def fails() -> None:
        raise MemoryError("out of memory in the child")

    child = logsearch._Forked(fails)
    child.wait()
    with pytest.raises(MemoryError, match="in the child"):
        child.result()


def test_window_scan_seeks_instead_of_reading_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    start = NOW - timedelta(hours=10)
    with path.open("w") as handle:
        for i in range(36_000):  # ten hours, a line a second
            handle.write(request_line(start + timedelta(seconds=i), "/p", 200))
    stats = logsearch.ScanStats()
    records = list(logsearch.window_records([path], NOW - timedelta(minutes=15), stats))
    assert len(records) == 15 * 60
    assert all(record.time and record.time >= NOW - timedelta(minutes=15) for record in records)
    # Only the last quarter hour and the slack before it are read, not ten hours.
    assert stats.bytes_read < path.stat().st_size / 10


# --- /triage logs ---------------------------------------------------------------------------


async def test_logs_newest_first_with_filters_cap_and_left_out(log_dir: Path) -> None:
    report = await run_logs(
        LogsArgs(level="error", since=timedelta(minutes=15), limit=5), patterns(log_dir), NOW
    )
    assert report.matched == 13  # twelve 500s and one 503 in the last ten minutes
    assert len(report.entries) == 5 and report.left_out == 8
    times = [entry.time for entry in report.entries]
    assert times == sorted(times, reverse=True)  # type: ignore[type-var]
    assert report.entries[0].summary.startswith("GET /api/v1/projects/7 → 503")
    # The gz file from two days ago and the one rotated an hour ago are not even opened.
    assert (report.scan.files, report.scan.files_skipped) == (3, 2)
    assert report.scan.non_json >= 2 and report.scan.untimed == 1
    by_path = await run_logs(
        LogsArgs(path="/api/v1/projects", since=timedelta(minutes=15)), patterns(log_dir), NOW
    )
    assert by_path.matched == 7  # six at /api/v1/projects, one at /api/v1/projects/7
    older = await run_logs(LogsArgs(level="warning", since=timedelta(hours=2)), patterns(log_dir), NOW)
    assert {entry.summary for entry in older.entries} >= {
        "worker_crashed",
        "GET /api/v1/auth/login → 401 in 12.5 ms",
    }


async def test_logs_with_no_matching_files(tmp_path: Path) -> None:
    report = await run_logs(LogsArgs(), [str(tmp_path / "none" / "*.log")], NOW)
    assert report.matched == 0 and report.scan.files == 0


# --- the logs check -------------------------------------------------------------------------

LOGS_ONLY = """
checks:
  - id: log_errors
    title: Errors in the logs
    kind: logs
    warn: 0
    critical: 10
    top: 3
    samples: 4
"""


def sources_for(log_paths: list[str]) -> TriageSources:
    return TriageSources(None, None, None, None, None, log_paths)


async def test_logs_check_counts_errors_top_paths_and_samples(log_dir: Path) -> None:
    checklist = parse_checklist(LOGS_ONLY)
    report = await run_triage(
        TriageArgs(window=timedelta(minutes=15)), sources_for(patterns(log_dir)), checklist, at=NOW
    )
    (finding,) = report.findings
    assert finding.status == "critical" and finding.value == 13
    assert finding.figure == "13 error lines in the last 15m"
    failing, samples = finding.evidence
    counts = {row[0]: row[1] for row in failing.rows}
    assert counts == {"/api/v1/uploads": "6", "/api/v1/projects": "6", "/api/v1/projects/7": "1"}
    last_errors = {row[0]: row[2] for row in failing.rows}
    assert last_errors["/api/v1/uploads"] == "KeyError: 'owner_id'"
    assert last_errors["/api/v1/projects/7"] == "status 503"
    assert len(samples.rows) == 4 and samples.rows[0][1] == TRACE  # the most recent failure first
    assert failing.note is not None and "non-JSON" in failing.note


async def test_logs_check_without_files_is_unknown(tmp_path: Path) -> None:
    report = await run_triage(
        TriageArgs(), sources_for([str(tmp_path / "*.log")]), parse_checklist(LOGS_ONLY), at=NOW
    )
    (finding,) = report.findings
    assert finding.status == "unknown"
    assert finding.reason is not None and "no file matches CHATOPS_LOG_PATHS" in finding.reason


def test_settings_log_paths_accept_several_globs() -> None:
    settings = Settings(_env_file=None, log_paths="/a/*.log, /b/*.log.gz")  # type: ignore[call-arg]
    assert settings.log_paths == ["/a/*.log", "/b/*.log.gz"]


def test_parse_time_accepts_the_usual_shapes() -> None:
    assert logsearch.parse_time("2026-01-02T03:04:05.678Z") == datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)
    assert logsearch.parse_time("2026-01-02 03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert logsearch.parse_time(1_700_000_000) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert logsearch.parse_time(1_700_000_000_000) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert logsearch.parse_time("yesterday") is None and logsearch.parse_time(True) is None


# --- ids as platforms write them ------------------------------------------------------------

# Each id, and a decoy that a pattern would wrongly match: `_` and `%` read as LIKE wildcards, `.`,
# `*` and `[c]` as a regex, a backslash or an accent spelled differently in JSON.
ID_SHAPES = [
    ("req-4242424", "req-4242425"),
    ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW"),  # ULID
    ("00f067aa0ba902b7", "00f067aa0ba902b8"),  # 16 hex
    ("4bf92f3577b34da6a3ce929d0e0e4799", "4bf92f3577b34da6a3ce929d0e0e4798"),  # 32 hex
    ("1-5759e988-bd862e3fe1be46a994272793", "1-5759e988-bd862e3fe1be46a994272794"),  # AWS X-Ray
    ("5f0c3c1e-9d1b-4c6e-8f3a-0d2b7e6a9c77", "5f0c3c1e9d1b4c6e8f3a0d2b7e6a9c77"),  # UUID
    ("req_1%", "reqX1-and-more"),  # LIKE: `_` any one character, `%` anything
    ("a.*b[c]", "aXYZbc"),  # regex: `.*` anything, `[c]` the letter c
    ("win\\req\\9", "win/req/9"),  # a backslash, doubled in JSON text
    ("café-é-42", "cafe-e-42"),  # written \u00e9 by json.dumps, as is by PostgreSQL's jsonb
]


@pytest.fixture
async def ids_dsn(postgres: str) -> Any:
    """A database of this test's own with an audit_log holding one row per id shape and its decoy."""
    from sandbox.platform_db import AUDIT_LOG_DDL
    from tests.conftest import ADMIN_DSN, recreate_database

    name = f"chatops_test_triage_ids_{os.getpid()}"
    dsn = await recreate_database(name)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(AUDIT_LOG_DDL)
        for index, (identifier, decoy) in enumerate(ID_SHAPES):
            for value, action in ((identifier, "PERMISSION_DENIED"), (decoy, "FILE_UPLOAD")):
                await conn.execute(
                    "INSERT INTO audit_log (timestamp, action, username, details)"
                    " VALUES ($1, $2, $3, $4::jsonb)",
                    NOW - timedelta(minutes=index),
                    action,
                    f"user{index}",
                    json.dumps({"request_id": value, "trace_id": value}),
                )
    finally:
        await conn.close()
    yield dsn
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.mark.parametrize(("identifier", "decoy"), ID_SHAPES)
async def test_ids_of_every_shape_are_found_literally_in_logs_and_audit_log(
    ids_dsn: str, tmp_path: Path, identifier: str, decoy: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # As the platform's structlog writes JSON lines: json.dumps, non-ASCII escaped.
    with gzip.open(logs / "app.log.1.gz", "wt") as handle:
        handle.write(request_line(NOW - timedelta(hours=1), "/api/v1/a", 200, request_id=identifier))
        handle.write(request_line(NOW - timedelta(hours=1), "/api/v1/b", 200, request_id=decoy))
    (logs / "app.log").write_text(
        request_line(NOW - timedelta(seconds=5), "/api/v1/c", 500, trace=identifier, request_id=decoy)
        + request_line(NOW - timedelta(seconds=4), "/api/v1/d", 200, trace=decoy)
    )
    database = PostgresAdapter("postgres", ids_dsn, 2.0)
    try:
        for kind in ("request", "trace"):
            typed = parse_request_id(identifier) if kind == "request" else parse_trace_id(identifier)
            assert typed == identifier
            report = await run_lookup(LookupArgs(kind=kind, id=typed), patterns(logs), database, timeout=5)  # type: ignore[arg-type]
            lines = [entry.data.get("path") for entry in report.entries if entry.source != "audit_log"]
            rows = [
                entry.data["details"][f"{kind}_id"] for entry in report.entries if entry.source == "audit_log"
            ]
            # Every line and row holding the id (as grep would), in time order; never the decoy's alone.
            assert lines == ["/api/v1/a", "/api/v1/c"]
            assert rows == [identifier]
            assert report.audit_problem is None and report.scan.files == 2
    finally:
        await database.aclose()
