"""PostgreSQL through asyncpg: one pool per database, created at start-up, connecting lazily."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from adapters.base import DependencyError


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
