"""Fixtures for /audit tests: a seeded audit_log in a database of this session, with the shipped indexes."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from adapters.postgres import PostgresAdapter
from bot.listeners.app import build_slack_app
from bot.runtime import Runtime
from bot.web.server import build_web_app
from commands.audit_indexes import index_statements
from sandbox.platform_db import seed_audit_log
from tests.conftest import ADMIN_DSN, BOT_TOKEN, SIGNING_SECRET, make_settings, recreate_database, serve_app
from tests.fakes import FakeSlack

T = TypeVar("T")

# One database per test session (the pid keeps two concurrent sessions apart).
DB_NAME = f"chatops_test_audit_{os.getpid()}"
EMPTY_DB_NAME = f"chatops_test_audit_empty_{os.getpid()}"
BARE_DB_NAME = f"chatops_test_audit_bare_{os.getpid()}"
SEED_ROWS = 3000

# Rows this module adds beside the sandbox's seed, for cases the seed does not have.
KNOWN_USER_ID = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
KNOWN_REQUEST = uuid.UUID("5f0c3c1e-9d1b-4c6e-8f3a-0d2b7e6a9c41")
NETMASK_IP = "10.20.30.40/24"  # an inet with a netmask, which `=` alone would miss


async def _add_known_rows(conn: asyncpg.Connection) -> None:
    """Insert a few deterministic rows: IPv6, NULLs, a masked inet, a dashed request id, a string 'false'."""
    rows = [
        # (minutes ago, action, user_id, username, ip, details)
        (
            5,
            "LOGIN",
            KNOWN_USER_ID,
            "alice.known",
            "2001:db8:abcd::7",
            {"success": False, "reason": "invalid_password"},
        ),
        (
            6,
            "LOGIN",
            KNOWN_USER_ID,
            "alice.known",
            "2001:db8:abcd::8",
            {"success": "false", "reason": "typed"},
        ),
        (7, "MFA_CHALLENGE_FAILED", KNOWN_USER_ID, "alice.known", NETMASK_IP, {"reason": "invalid_code"}),
        (8, "PERMISSION_DENIED", None, None, None, {"request_id": str(KNOWN_REQUEST)}),
        (9, "FILE_UPLOAD", KNOWN_USER_ID, "alice.known", "10.20.30.41", {"request_id": KNOWN_REQUEST.hex}),
        (60 * 30, "LOGIN", KNOWN_USER_ID, "alice.known", "2001:db8:abcd::7", {"success": True}),
    ]
    now = datetime.now(UTC)
    await conn.executemany(
        """INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
           VALUES ($1, $2, $3, $4, $5::inet, $6::jsonb)""",
        [
            (now - timedelta(minutes=ago), action, user_id, username, ip, json.dumps(details))
            for ago, action, user_id, username, ip, details in rows
        ],
    )


async def apply_indexes(dsn: str) -> None:
    """Apply the shipped index file, one statement at a time (CONCURRENTLY refuses a transaction)."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in index_statements():
            await conn.execute(statement)
        await conn.execute("ANALYZE audit_log")
    finally:
        await conn.close()


@pytest.fixture(scope="session", name="audit_dsn")
async def audit_dsn_fixture(postgres: str) -> AsyncIterator[str]:
    """Create this session's database, seed audit_log, add the known rows and the indexes."""
    dsn = await recreate_database(DB_NAME)
    conn = await asyncpg.connect(dsn)
    try:
        await seed_audit_log(conn, rows=SEED_ROWS)
        await _add_known_rows(conn)
    finally:
        await conn.close()
    await apply_indexes(dsn)
    yield dsn
    await _drop(DB_NAME)


@pytest.fixture(scope="session", name="bare_dsn")
async def bare_dsn_fixture(postgres: str) -> AsyncIterator[str]:
    """The same seeded audit_log without the reviewed indexes (only the sandbox schema's own)."""
    dsn = await recreate_database(BARE_DB_NAME)
    conn = await asyncpg.connect(dsn)
    try:
        await seed_audit_log(conn, rows=SEED_ROWS)
        await _add_known_rows(conn)
        await conn.execute("ANALYZE audit_log")
    finally:
        await conn.close()
    yield dsn
    await _drop(BARE_DB_NAME)


@pytest.fixture(scope="session", name="empty_dsn")
async def empty_dsn_fixture(postgres: str) -> AsyncIterator[str]:
    """A database without an audit_log table."""
    dsn = await recreate_database(EMPTY_DB_NAME)
    yield dsn
    await _drop(EMPTY_DB_NAME)


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session", name="audit_db")
async def audit_db_fixture(audit_dsn: str) -> AsyncIterator[PostgresAdapter]:
    """The platform database adapter /audit uses, pointed at this session's database."""
    adapter = PostgresAdapter("postgres", audit_dsn, timeout=5.0)
    yield adapter
    await adapter.aclose()


@pytest.fixture(name="raw")
async def raw_fixture(audit_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for a test's own, independent SQL."""
    conn = await asyncpg.connect(audit_dsn)
    yield conn
    await conn.close()


async def stable(expected: Callable[[], Awaitable[T]], actual: Callable[[], Awaitable[Any]]) -> tuple[T, Any]:
    """Run `actual` between two runs of `expected`; retry when the window's edge moved a row meanwhile."""
    for _ in range(5):
        before = await expected()
        got = await actual()
        after = await expected()
        if before == after:
            return before, got
        await asyncio.sleep(0.05)
    raise AssertionError("the expected answer kept changing")


class SpyDatabase:
    """A stand-in platform database that records any attempt to query it."""

    name = "postgres"
    database = "spy"

    def __init__(self) -> None:
        self.calls = 0

    def read_only(self, statement_timeout: float) -> Any:
        """Record the attempt and refuse it."""
        self.calls += 1
        raise AssertionError("a query was attempted")

    def connection(self) -> Any:
        """Record the attempt and refuse it."""
        self.calls += 1
        raise AssertionError("a query was attempted")

    async def aclose(self) -> None:
        """Nothing to close."""


@asynccontextmanager
async def running_bot(fake: FakeSlack, platform_dsn: str, **overrides: Any) -> AsyncIterator[str]:
    """Serve the bot's real web app (as `chatops serve` builds it) against the fake Slack."""
    settings = make_settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake.url,
        platform_database_url=platform_dsn,
        **overrides,
    )
    runtime = Runtime.build(settings)
    assert runtime.slack_client is not None
    app = build_web_app(runtime.services, build_slack_app(runtime, runtime.slack_client))
    try:
        async with serve_app(app) as url:
            yield url
    finally:
        await runtime.services.aclose()


@pytest.fixture(name="cli_env")
def cli_env_fixture(audit_dsn: str) -> Iterator[dict[str, str]]:
    """Environment for `python -m bot audit ...` against this session's database."""
    yield {
        **os.environ,
        "CHATOPS_PLATFORM_DATABASE_URL": audit_dsn,
        "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS": "2",
    }
