"""PostgreSQL through asyncpg: one pool per database, created at start-up, connecting lazily."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from adapters.base import ClockReading, DependencyError


class PostgresAdapter:
    """A PostgreSQL database the bot reads (the platform's) or owns (its state)."""

    def __init__(self, name: str, dsn: str, timeout: float) -> None:
        self.name = name
        self.dsn = dsn
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @property
    def database(self) -> str:
        """Return the database name from the DSN."""
        return urlsplit(self.dsn).path.lstrip("/") or "postgres"

    async def _get_pool(self) -> asyncpg.Pool:
        # The pool is made on first use so that the bot starts even when PostgreSQL is down.
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,
                    max_size=5,
                    timeout=self.timeout,
                    command_timeout=max(self.timeout, 30.0),
                    max_inactive_connection_lifetime=60.0,
                )
            return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Lend a pooled connection; a connection that fails is dropped by the pool."""
        pool = await self._get_pool()
        async with pool.acquire(timeout=self.timeout) as conn:
            yield conn

    @asynccontextmanager
    async def read_only(self, statement_timeout: float) -> AsyncIterator[asyncpg.Connection]:
        """Lend a connection inside a read-only snapshot whose statements stop at `statement_timeout`."""
        milliseconds = str(max(1, round(statement_timeout * 1000)))
        async with self.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            # SET LOCAL cannot take parameters; set_config(..., true) is its parameterized form.
            # A client that stalls mid-transaction (a slow export reader) must not hold a snapshot forever.
            await conn.execute(
                "SELECT set_config('statement_timeout', $1, true),"
                " set_config('idle_in_transaction_session_timeout', $2, true)",
                milliseconds,
                str(max(int(milliseconds) * 4, 60_000)),
                timeout=self.timeout,
            )
            yield conn

    async def ping(self) -> str:
        """Run `SELECT version()` and return the server's version line."""
        async with self.connection() as conn:
            version = await conn.fetchval("SELECT version()", timeout=self.timeout)
        if not isinstance(version, str) or not version.startswith("PostgreSQL"):
            raise DependencyError("unexpected answer", f"SELECT version() returned {version!r}")
        return " ".join(version.split()[:2])

    async def aclose(self) -> None:
        """Close the pool, waiting briefly for connections to return."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()

    async def activity(self, slower_than: float, show: int) -> Activity:
        """Read connections, slow queries, waiting locks and the database size in one round trip."""
        async with self.connection() as conn:
            row = await conn.fetchrow(_ACTIVITY_SQL, slower_than, show, timeout=self.timeout)
        if row is None:
            raise DependencyError("unexpected answer", "the activity query returned no row")
        return Activity(
            database=str(row["database"]),
            database_bytes=int(row["database_bytes"]),
            max_connections=int(row["max_connections"]),
            reserved_connections=int(row["reserved_connections"]),
            connections=int(row["connections"]),
            by_state=json.loads(row["by_state"]),
            slow_queries=json.loads(row["slow_queries"]),
            slow_count=int(row["slow_count"]),
            waiting_locks=json.loads(row["waiting_locks"]),
            waiting_count=int(row["waiting_count"]),
        )

    async def server_clock(self, clock: Callable[[], datetime]) -> ClockReading:
        """Read the server's `clock_timestamp()` with the local clock read just before and after."""
        async with self.connection() as conn:
            sent = clock()
            server = await conn.fetchval("SELECT clock_timestamp()", timeout=self.timeout)
            received = clock()
        if not isinstance(server, datetime):
            raise DependencyError("unexpected answer", f"clock_timestamp() returned {server!r}")
        return ClockReading(server=server, sent=sent, received=received)


class StateRepository:
    """A repository over the bot's state database: each use of it bounded by one timeout."""

    def __init__(self, state_db: PostgresAdapter, timeout: float | None = None) -> None:
        self.state_db = state_db
        # Bookkeeping queries are small; a few seconds is generous and still bounds a hung server.
        self.timeout = timeout if timeout is not None else max(state_db.timeout, 5.0)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        async with asyncio.timeout(self.timeout), self.state_db.connection() as conn:
            yield conn


@dataclass(frozen=True)
class Activity:
    """What pg_stat_activity and pg_locks say, as the runbook's Verificar Banco de Dados reads them."""

    database: str
    database_bytes: int
    max_connections: int
    reserved_connections: int
    connections: int
    # [{state, datname, count}], [{pid, datname, usename, seconds, state, wait_event, query}], ...
    by_state: list[dict[str, Any]]
    slow_queries: list[dict[str, Any]]
    slow_count: int
    waiting_locks: list[dict[str, Any]]
    waiting_count: int


# Client backends only: max_connections limits them, not the server's background workers.
# Our own backend is left out of the slow queries (it is this very query).
_ACTIVITY_SQL = """
SELECT
    current_database() AS database,
    pg_database_size(current_database()) AS database_bytes,
    current_setting('max_connections')::int AS max_connections,
    current_setting('superuser_reserved_connections')::int AS reserved_connections,
    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
    (SELECT coalesce(json_agg(s ORDER BY s.count DESC), '[]') FROM (
        SELECT coalesce(state, 'unknown') AS state, coalesce(datname, '') AS datname, count(*) AS count
        FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2
    ) s) AS by_state,
    (SELECT coalesce(json_agg(q ORDER BY q.seconds DESC), '[]') FROM (
        SELECT pid, coalesce(datname, '') AS datname, coalesce(usename, '') AS usename,
               extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds,
               coalesce(wait_event_type || ':' || wait_event, '') AS wait_event,
               left(regexp_replace(query, '\\s+', ' ', 'g'), 300) AS query
        FROM pg_stat_activity
        WHERE state = 'active' AND pid <> pg_backend_pid()
          AND clock_timestamp() - query_start > make_interval(secs => $1)
        ORDER BY query_start LIMIT $2
    ) q) AS slow_queries,
    (SELECT count(*) FROM pg_stat_activity
        WHERE state = 'active' AND pid <> pg_backend_pid()
          AND clock_timestamp() - query_start > make_interval(secs => $1)) AS slow_count,
    (SELECT coalesce(json_agg(l ORDER BY l.seconds DESC NULLS LAST), '[]') FROM (
        SELECT l.pid, l.locktype, l.mode,
               coalesce(l.relation::regclass::text, '') AS relation,
               coalesce(a.datname, '') AS datname,
               extract(epoch FROM clock_timestamp() - l.waitstart)::float8 AS seconds,
               pg_blocking_pids(l.pid) AS blocked_by,
               left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 300) AS query
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE NOT l.granted
        LIMIT $2
    ) l) AS waiting_locks,
    (SELECT count(*) FROM pg_locks WHERE NOT granted) AS waiting_count
"""
