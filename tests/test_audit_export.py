"""/audit export: CSV and JSON that round-trip to the rows, written batch by batch, also from the CLI."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres import PostgresAdapter
from bot.invocation import Invocation
from bot.runners.audit import run as run_audit
from bot.services import Services
from commands.audit import AuditExport, AuditUnavailable, ExportRequest, Limits, parse
from commands.audit_export import COLUMNS, export
from commands.audit_indexes import index_file_text
from sandbox.platform_db import BRUTE_FORCE_USERNAME
from tests.audit_fixtures import (  # noqa: F401  (fixtures are found by their names)
    audit_db_fixture,
    audit_dsn_fixture,
    cli_env_fixture,
    empty_dsn_fixture,
    raw_fixture,
    stable,
)
from tests.conftest import make_settings
from tests.test_audit_hostile import FRAGMENTS

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0

Row = tuple[int, datetime, str, uuid.UUID | None, str | None, Any, Any]


def request_for(tokens: list[str]) -> ExportRequest:
    request = parse(["export", *tokens], Limits(export_max_rows=1_000_000))
    assert isinstance(request, ExportRequest)
    return request


async def run_export(db: PostgresAdapter, tokens: list[str], **options: Any) -> tuple[AuditExport, bytes]:
    sink = io.BytesIO()
    result = await export(
        db, request_for(tokens), sink, statement_timeout=TIMEOUT, destination="test", **options
    )
    assert isinstance(result, AuditExport), result
    return result, sink.getvalue()


async def expected_rows(conn: asyncpg.Connection, where: str, *args: Any) -> list[Row]:
    """The independent answer: the rows by plain SQL, in the same normal form as the parsed file."""
    records = await conn.fetch(
        "SELECT id, timestamp, action, user_id, username, ip_address, details::text AS details"
        f" FROM audit_log WHERE {where} ORDER BY timestamp, id",
        *args,
    )
    return [
        (
            r["id"],
            r["timestamp"],
            r["action"],
            r["user_id"],
            r["username"],
            None if r["ip_address"] is None else ipaddress.ip_interface(str(r["ip_address"])),
            json.loads(r["details"]),
        )
        for r in records
    ]


def csv_rows(data: bytes) -> list[Row]:
    """Read the CSV back; an empty field is NULL (non-NULL text is always quoted)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    assert next(reader) == list(COLUMNS)
    return [
        (
            int(row_id),
            datetime.fromisoformat(timestamp),
            action,
            uuid.UUID(user_id) if user_id else None,
            username or None,
            ipaddress.ip_interface(ip) if ip else None,
            json.loads(details),
        )
        for row_id, timestamp, action, user_id, username, ip, details in reader
    ]


def json_rows(data: bytes) -> list[Row]:
    return [
        (
            item["id"],
            datetime.fromisoformat(item["timestamp"]),
            item["action"],
            None if item["user_id"] is None else uuid.UUID(item["user_id"]),
            item["username"],
            None if item["ip_address"] is None else ipaddress.ip_interface(item["ip_address"]),
            item["details"],
        )
        for item in json.loads(data)
    ]


# ---------------------------------------------------------------- round trips


async def test_csv_parsed_back_equals_the_rows(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    rows, (result, data) = await stable(
        lambda: expected_rows(
            raw, "username = $1 AND timestamp > now() - interval '3 days'", BRUTE_FORCE_USERNAME
        ),
        lambda: run_export(audit_db, ["csv", "user", BRUTE_FORCE_USERNAME, "since=3d"]),
    )
    assert len(rows) > 40
    assert csv_rows(data) == rows
    assert (result.rows, result.size_bytes, result.truncated) == (len(rows), len(data), None)
    assert result.filename.startswith("audit-user-") and result.filename.endswith(".csv")


async def test_json_parsed_back_equals_the_rows(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    rows, (result, data) = await stable(
        lambda: expected_rows(raw, "timestamp > now() - interval '30 days'"),
        lambda: run_export(audit_db, ["json", "since=30d"]),
    )
    assert len(rows) > 3000
    assert json_rows(data) == rows
    assert result.rows == len(rows) and result.filename.endswith(".json")


async def test_csv_loads_back_into_postgresql_unchanged(
    audit_db: PostgresAdapter, raw: asyncpg.Connection
) -> None:
    """COPY FROM reads the file as PostgreSQL wrote it: NULLs, empty strings, jsonb and inet all survive."""
    _, data = await run_export(audit_db, ["csv", "since=30d"])
    await raw.execute("CREATE TEMP TABLE reloaded (LIKE audit_log)")
    await raw.copy_to_table("reloaded", source=io.BytesIO(data), format="csv", header=True)
    assert await raw.fetchval("SELECT count(*) FROM reloaded") > 3000
    assert (
        await raw.fetchval("SELECT count(*) FROM (SELECT * FROM reloaded EXCEPT SELECT * FROM audit_log) x")
        == 0
    )
    # The known rows include NULL user, username and address: still NULL after the trip.
    assert (
        await raw.fetchval("SELECT count(*) FROM reloaded WHERE username IS NULL AND ip_address IS NULL") >= 1
    )


async def test_filters_combine_in_an_export(audit_db: PostgresAdapter, raw: asyncpg.Connection) -> None:
    rows, (_, data) = await stable(
        lambda: expected_rows(
            raw,
            "action = 'LOGIN' AND details->>'success' = 'false' AND ip_address <<= '192.168.1.0/24'"
            " AND timestamp > now() - interval '3 days'",
        ),
        lambda: run_export(audit_db, ["csv", "failed-logins", "ip=192.168.1.0/24", "since=3d"]),
    )
    assert rows and csv_rows(data) == rows


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.sampled_from(FRAGMENTS)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10).filter(lambda key: "\x00" not in key), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(details=st.dictionaries(st.sampled_from(FRAGMENTS) | st.just("request_id"), json_values, max_size=6))
async def test_hostile_details_round_trip(
    audit_db: PostgresAdapter, audit_dsn: str, details: dict[str, Any]
) -> None:
    conn = await asyncpg.connect(audit_dsn)
    marker = uuid.uuid4()
    try:
        await conn.execute(
            """INSERT INTO audit_log (action, user_id, username, ip_address, details)
               VALUES ('FILE_UPLOAD', $1, $2, '2001:db8::5', $3::jsonb)""",
            marker,
            "".join(FRAGMENTS[:12]),
            json.dumps(details),
        )
        rows = await expected_rows(conn, "user_id = $1", marker)
        _, as_csv = await run_export(audit_db, ["csv", f"user={marker}", "since=1d"])
        _, as_json = await run_export(audit_db, ["json", f"user={marker}", "since=1d"])
        assert csv_rows(as_csv) == json_rows(as_json) == rows
        assert rows[0][6] == details
    finally:
        await conn.execute("DELETE FROM audit_log WHERE user_id = $1", marker)
        await conn.close()


# ---------------------------------------------------------------- limits and streaming


async def test_limit_cuts_and_says_so(audit_db: PostgresAdapter) -> None:
    full, _ = await run_export(audit_db, ["csv", "user", BRUTE_FORCE_USERNAME, "since=3d"])
    exact, _ = await run_export(
        audit_db, ["json", "user", BRUTE_FORCE_USERNAME, "since=3d", f"limit={full.rows}"]
    )
    assert exact.rows == full.rows and exact.truncated is None
    cut, data = await run_export(audit_db, ["json", "user", BRUTE_FORCE_USERNAME, "since=3d", "limit=5"])
    assert cut.rows == 5 and len(json.loads(data)) == 5
    assert cut.truncated == "stopped at limit=5 rows; more rows matched"


async def test_the_slack_byte_cap_still_leaves_a_valid_file(audit_db: PostgresAdapter) -> None:
    for fmt, read in (("csv", csv_rows), ("json", json_rows)):
        result, data = await run_export(audit_db, [fmt, "since=30d"], max_bytes=20_000, batch_rows=10)
        assert result.truncated is not None and "upload limit" in result.truncated
        assert len(read(data)) == result.rows and 0 < result.rows < 3000
        assert len(data) < 20_000 + 10 * 2_000


async def test_an_empty_export_is_still_a_valid_file(audit_db: PostgresAdapter) -> None:
    result, data = await run_export(audit_db, ["json", "user", "nobody.at.all"])
    assert (result.rows, json.loads(data)) == (0, [])
    _, data = await run_export(audit_db, ["csv", "user", "nobody.at.all"])
    assert data.decode() == ",".join(COLUMNS) + "\r\n"


class CountingSink(io.BytesIO):
    """Remembers the size of each write, to show that rows arrive batch by batch."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, data: Any) -> int:
        self.writes.append(len(data))
        return super().write(data)


async def test_rows_are_written_batch_by_batch(audit_db: PostgresAdapter) -> None:
    sink = CountingSink()
    result = await export(
        audit_db,
        request_for(["csv", "since=30d"]),
        sink,
        statement_timeout=TIMEOUT,
        destination="test",
        batch_rows=100,
    )
    assert isinstance(result, AuditExport) and result.rows > 3000
    # The header, then one write per batch of 100 rows: never the whole file at once.
    assert len(sink.writes) == 1 + -(-result.rows // 100)
    assert max(sink.writes) < 100 * 2_000


# ---------------------------------------------------------------- failures


async def test_a_failed_export_leaves_no_file(
    audit_dsn: str, raw: asyncpg.Connection, tmp_path: Path
) -> None:
    services = Services.build(
        make_settings(platform_database_url=audit_dsn, audit_statement_timeout_seconds=0.3)
    )
    target = tmp_path / "audit.csv"
    try:
        async with raw.transaction():
            await raw.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
            result = await run_audit(
                services, ["export", "csv", f"output={target}"], Invocation("test", "cli")
            )
    finally:
        await services.aclose()
    assert isinstance(result, AuditUnavailable) and result.reason == "timeout"
    assert result.rows_written == 0
    assert list(tmp_path.iterdir()) == []


async def test_a_destination_that_refuses_bytes_is_named(audit_db: PostgresAdapter) -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    result = await export(audit_db, request_for(["csv"]), Full(), statement_timeout=TIMEOUT, destination="x")  # type: ignore[arg-type]
    assert isinstance(result, AuditUnavailable)
    assert result.detail == "writing the export failed: No space left on device"


async def test_export_from_a_database_without_audit_log(empty_dsn: str) -> None:
    db = PostgresAdapter("postgres", empty_dsn, timeout=2)
    try:
        result = await export(
            db, request_for(["csv"]), io.BytesIO(), statement_timeout=TIMEOUT, destination="x"
        )
    finally:
        await db.aclose()
    assert isinstance(result, AuditUnavailable) and result.reason == "not found"


# ---------------------------------------------------------------- the CLI


def chatops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, cwd=REPO, env=env, timeout=120, check=False
    )


def test_cli_export_to_a_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    done = chatops(
        cli_env, "audit", "export", "csv", "user", BRUTE_FORCE_USERNAME, "since=3d", "--output", str(target)
    )
    assert done.returncode == 0, done.stderr
    assert b"wrote " in done.stdout and str(target).encode() in done.stdout
    rows = csv_rows(target.read_bytes())
    assert rows and {row[4] for row in rows} == {BRUTE_FORCE_USERNAME}
    assert not (tmp_path / "out.csv.part").exists()


def test_cli_export_to_stdout_keeps_the_summary_off_it(cli_env: dict[str, str]) -> None:
    done = chatops(cli_env, "audit", "export", "json", "mfa", "since=3d")
    assert done.returncode == 0, done.stderr
    rows = json_rows(done.stdout)
    assert rows and {row[2] for row in rows} == {"MFA_CHALLENGE_FAILED"}
    assert b"wrote " in done.stderr


def test_cli_forms_bad_input_and_indexes(cli_env: dict[str, str], empty_dsn: str) -> None:
    shown = chatops(cli_env, "audit", "failed-logins", "since=1d")
    assert shown.returncode == 0, shown.stderr
    assert BRUTE_FORCE_USERNAME.encode() in shown.stdout

    as_json = json.loads(chatops(cli_env, "audit", "security", "limit=3", "--json").stdout)
    assert as_json["form"] == "security" and len(as_json["rows"]) == 3

    bad = chatops(cli_env, "audit", "ip", "10.0.0.300")
    assert bad.returncode == 2
    assert b"'10.0.0.300' is not an IP address or CIDR network" in bad.stderr

    listed = chatops(cli_env, "audit", "indexes")
    assert listed.returncode == 0
    assert listed.stdout.decode().startswith(index_file_text().rstrip("\n"))
    assert b"missing or invalid: none" in listed.stdout

    missing = chatops({**cli_env, "CHATOPS_PLATFORM_DATABASE_URL": empty_dsn}, "audit", "user", "ana")
    assert missing.returncode == 1
    assert b"has no audit_log table" in missing.stderr


def test_cli_window_is_bounded_by_the_setting(cli_env: dict[str, str]) -> None:
    done = chatops({**cli_env, "CHATOPS_AUDIT_MAX_WINDOW_DAYS": "7"}, "audit", "mfa", "since=8d")
    assert done.returncode == 2
    assert b"since: '8d' is longer than the maximum of 7d" in done.stderr
