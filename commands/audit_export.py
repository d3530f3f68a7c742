"""`/audit export`: matching audit_log rows streamed through a server-side cursor into CSV or JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

import asyncpg

from commands.audit import (
    CLIENT_TIMEOUT_MARGIN,
    AuditExport,
    AuditUnavailable,
    ExportRequest,
    Params,
    ReadOnlyDatabase,
    prepare_session,
    unavailable,
    where_clause,
)
from commands.base import CommandResult, format_duration

COLUMNS = ("id", "timestamp", "action", "user_id", "username", "ip_address", "details")
# Rows per FETCH: large enough that round trips do not dominate, small enough to keep memory flat.
BATCH_ROWS = 5000


def export_sql(request: ExportRequest) -> tuple[str, list[Any]]:
    """Return the export query and its parameters, oldest row first."""
    params = Params()
    where = where_clause(request.filter, request.since, params)
    # details is fetched as its text so that it is written exactly as PostgreSQL stores it.
    sql = (
        "SELECT id, timestamp, action, user_id, username, ip_address, details::text AS details"
        # One row past the limit tells a complete export from a cut one.
        f" FROM audit_log WHERE {where} ORDER BY timestamp, id LIMIT {params(request.limit + 1)}"
    )
    return sql, params.values


class SinkError(Exception):
    """The export's destination refused bytes (disk full, closed pipe); not the database's fault."""


def _write(sink: IO[bytes], text: str) -> int:
    data = text.encode("utf-8")
    try:
        sink.write(data)
    except OSError as error:
        raise SinkError(error.strerror or str(error)) from error
    return len(data)


def _csv_text(value: str) -> str:
    # Every non-NULL text is quoted and NULL is left empty, as PostgreSQL's COPY ... CSV FORCE_QUOTE
    # writes it: the file keeps NULL apart from '' and loads back with COPY FROM unchanged.
    return '"' + value.replace('"', '""') + '"'


class CsvWriter:
    """Write rows as CSV with a header line."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.bytes = 0

    def start(self) -> None:
        """Write the header line."""
        self._write(",".join(COLUMNS) + "\r\n")

    def rows(self, records: Sequence[asyncpg.Record]) -> None:
        """Write one batch of rows."""
        if not records:
            return
        lines = []
        for row_id, timestamp, action, user_id, username, ip_address, details in records:
            lines.append(
                ",".join(
                    (
                        str(row_id),
                        _csv_text(timestamp.isoformat()),
                        _csv_text(action),
                        "" if user_id is None else _csv_text(str(user_id)),
                        "" if username is None else _csv_text(username),
                        "" if ip_address is None else _csv_text(str(ip_address)),
                        _csv_text(details),
                    )
                )
            )
        lines.append("")
        self._write("\r\n".join(lines))

    def finish(self) -> None:
        """Nothing follows the last row in CSV."""

    def _write(self, text: str) -> None:
        self.bytes += _write(self.sink, text)


class JsonWriter:
    """Write rows as one JSON array, one object per line, `details` as the stored JSON."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.bytes = 0
        self._first = True

    def start(self) -> None:
        """Open the array."""
        self._write("[")

    def rows(self, records: Sequence[asyncpg.Record]) -> None:
        """Write one batch of rows."""
        if not records:
            return
        dumps = json.dumps
        objects = [
            f'{{"id":{row_id},"timestamp":"{timestamp.isoformat()}","action":{dumps(action)},'
            f'"user_id":{"null" if user_id is None else dumps(str(user_id))},'
            f'"username":{dumps(username)},'
            f'"ip_address":{"null" if ip_address is None else dumps(str(ip_address))},'
            f'"details":{details}}}'
            for row_id, timestamp, action, user_id, username, ip_address, details in records
        ]
        self._write(("\n" if self._first else ",\n") + ",\n".join(objects))
        self._first = False

    def finish(self) -> None:
        """Close the array."""
        self._write("\n]\n")

    def _write(self, text: str) -> None:
        self.bytes += _write(self.sink, text)


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
    writer = CsvWriter(sink) if request.format == "csv" else JsonWriter(sink)
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
        destination=destination,
        filename=export_filename(request, at),
        database=db.database,
        duration_ms=round(elapsed * 1000, 1),
        rows_per_second=round(rows / elapsed, 1) if elapsed > 0 else 0.0,
    )
