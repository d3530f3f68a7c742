"""`/audit export`: matching audit_log rows streamed through a server-side cursor into CSV or JSON.

CSV cells that a spreadsheet would run as formulas are neutralised (a leading `'`, OWASP's advice).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

import asyncpg

from commands.audit_queries import (
    CLIENT_TIMEOUT_MARGIN,
    Params,
    ReadOnlyDatabase,
    prepare_session,
    unavailable,
    where_clause,
)
from commands.audit_request import ExportFormat, ExportRequest
from commands.audit_results import AuditExport, AuditUnavailable
from commands.base import CommandResult, format_duration

COLUMNS = ("id", "timestamp", "action", "user_id", "username", "ip_address", "details")
# Rows per FETCH: large enough that round trips do not dominate, small enough to keep memory flat.
BATCH_ROWS = 5000

# Each row is formatted by PostgreSQL, as its COPY does, and the bot only joins lines: several
# times faster than decoding every value into Python objects and writing them out again.
# Timestamps in UTC ISO 8601; addresses as PostgreSQL writes an inet (abbrev: no /32 on a host).
_TIMESTAMP = """to_char(audit_log.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


# A spreadsheet takes a cell starting with one of these for a formula (OWASP, "CSV Injection"):
# `=HYPERLINK(...)` in a username would run when an investigator opens the file. In CSV such a
# text cell is written with a single quote first (`'=HYPERLINK(...)`), which spreadsheets show as
# text; a reader that wants the stored value back drops that quote. JSON is written exactly.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_STARTS_SQL = (
    "(" + ", ".join(f"E'{start.encode('unicode_escape').decode()}'" for start in FORMULA_STARTS) + ")"
)
CSV_NOTE = (
    "Cells starting with = + - @, a tab or a carriage return begin with ' in this CSV, so that no"
    " spreadsheet runs them as formulas; JSON keeps every value exact."
)


def _neutralised(expression: str, guard: str = "") -> str:
    """The text, with a single quote before it when it starts like a formula."""
    starts = f"{guard}left({expression}, 1) IN {_FORMULA_STARTS_SQL}"
    return f"CASE WHEN {starts} THEN '''' || {expression} ELSE {expression} END"


def _quoted(expression: str) -> str:
    # Every non-NULL text is quoted and NULL is left empty, as COPY ... CSV FORCE_QUOTE writes it:
    # the file keeps NULL apart from '' and loads back with COPY FROM (a neutralised cell keeps its ').
    return f"""coalesce('"' || replace({expression}, '"', '""') || '"', '')"""


_LINE = {
    "csv": "concat_ws(',', id::text, "
    + ", ".join(
        _quoted(expression)
        for expression in (
            _TIMESTAMP,
            _neutralised("action"),
            _neutralised("user_id::text"),
            _neutralised("username"),
            _neutralised("abbrev(ip_address)"),
            # Of JSON texts only a number's can start so (-1): the guard spares converting every
            # (large) object twice more.
            _neutralised("details::text", guard="jsonb_typeof(details) = 'number' AND "),
        )
    )
    + ")",
    "json": (
        f"json_build_object('id', id, 'timestamp', {_TIMESTAMP}, 'action', action, 'user_id', user_id,"
        " 'username', username, 'ip_address', abbrev(ip_address), 'details', details)::text"
    ),
}


def export_sql(request: ExportRequest) -> tuple[str, list[Any]]:
    """Return the export query (one formatted line per row, oldest first) and its parameters."""
    params = Params()
    where = where_clause(request.filter, request.since, params)
    sql = (
        f"SELECT {_LINE[request.format]} AS line FROM audit_log WHERE {where}"
        # One row past the limit tells a complete export from a cut one.
        f" ORDER BY timestamp, id LIMIT {params(request.limit + 1)}"
    )
    return sql, params.values


class SinkError(Exception):
    """The export's destination refused bytes (disk full, closed pipe); not the database's fault."""


class Writer:
    """Write formatted lines to the sink: CSV under a header, JSON as one array."""

    def __init__(self, sink: IO[bytes], fmt: ExportFormat) -> None:
        self.sink = sink
        self.format = fmt
        self.bytes = 0
        self._first = True

    def start(self) -> None:
        """Write what comes before the first row."""
        self._write(",".join(COLUMNS) + "\r\n" if self.format == "csv" else "[")

    def rows(self, records: Sequence[asyncpg.Record]) -> None:
        """Write one batch of rows."""
        if not records:
            return
        if self.format == "csv":
            self._write("\r\n".join(record[0] for record in records) + "\r\n")
        else:
            self._write(("\n" if self._first else ",\n") + ",\n".join(record[0] for record in records))
        self._first = False

    def finish(self) -> None:
        """Write what comes after the last row."""
        if self.format == "json":
            self._write("\n]\n")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        try:
            self.sink.write(data)
        except OSError as error:
            raise SinkError(error.strerror or str(error)) from error
        self.bytes += len(data)


def export_filename(request: ExportRequest, at: datetime) -> str:
    """Name the file after what it holds and when it was taken."""
    what = request.form or "all"
    return f"audit-{what}-{at:%Y%m%dT%H%M%SZ}.{request.format}"


async def export(
    db: ReadOnlyDatabase,
    request: ExportRequest,
    sink: IO[bytes],
    *,
    statement_timeout: float,
    destination: str,
    max_bytes: int | None = None,
    batch_rows: int = BATCH_ROWS,
) -> CommandResult:
    """Stream every matching row into `sink`, one batch at a time, within one read-only snapshot."""
    started = time.perf_counter()
    at = datetime.now(UTC)
    writer = Writer(sink, request.format)
    sql, params = export_sql(request)
    timeout = statement_timeout + CLIENT_TIMEOUT_MARGIN
    rows = 0
    truncated: str | None = None
    try:
        async with db.read_only(statement_timeout) as conn:
            await prepare_session(conn, timeout)
            # A server-side cursor: PostgreSQL keeps the result and hands it over batch by batch,
            # so the bot holds one batch at a time whatever the size of the export.
            cursor = await conn.cursor(sql, *params, timeout=timeout)
            writer.start()
            while True:
                records = await cursor.fetch(batch_rows, timeout=timeout)
                if not records:
                    break
                if rows + len(records) > request.limit:
                    records = records[: request.limit - rows]
                    truncated = f"stopped at limit={request.limit:,} rows; more rows matched"
                writer.rows(records)
                rows += len(records)
                if truncated is not None:
                    break
                if max_bytes is not None and writer.bytes >= max_bytes:
                    truncated = f"stopped at {max_bytes:,} bytes, the upload limit; narrow it or use the CLI"
                    break
            writer.finish()
    except SinkError as error:
        return AuditUnavailable(
            database=db.database,
            reason="error",
            detail=f"writing the export failed: {error}",
            rows_written=rows,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return unavailable(error, db.database, statement_timeout, rows_written=rows)
    elapsed = time.perf_counter() - started
    return AuditExport(
        format=request.format,
        description=request.describe(),
        since=format_duration(request.since),
        rows=rows,
        size_bytes=writer.bytes,
        truncated=truncated,
        note=CSV_NOTE if request.format == "csv" else None,
        destination=destination,
        filename=export_filename(request, at),
        database=db.database,
        duration_ms=round(elapsed * 1000, 1),
        rows_per_second=round(rows / elapsed, 1) if elapsed > 0 else 0.0,
    )
