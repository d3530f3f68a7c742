"""Shared fixtures: the machine's PostgreSQL and Redis, the sandbox, fresh databases, the fake Slack
and the bot served over HTTP; and the order of the run (tests that stop shared services go last).

A test (or fixture) that connects to PostgreSQL or Redis asks for the `postgres` or `redis` fixture,
directly or through another one (`sandbox` asks for both); `recreate_database` checks that it did.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import uvicorn

# Tests never read a developer's .env or real tokens.
for _name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "GITHUB_TOKEN"):
    os.environ.pop(_name, None)

from bot.config import Settings  # noqa: E402
from bot.observability import configure_logging  # noqa: E402
from sandbox.manager import SandboxStatus  # noqa: E402
from sandbox.platform_db import ensure_database  # noqa: E402
from sandbox.testing import ensure_sandbox  # noqa: E402
from tests.fakes import FakeSlack  # noqa: E402
from tests.local_services import ADMIN_DSN, ensure_postgres, ensure_redis  # noqa: E402

# As the CLI does: log lines go to stderr as JSON, so stdout holds only results.
configure_logging("WARNING")

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


def make_settings(**overrides: Any) -> Settings:
    """Build settings from defaults (the sandbox) plus overrides, ignoring any .env file.

    Incidents live where they are declared unless a test asks for their own channel
    (`incident_workspace="dedicated"`, the product's default: tests/test_incident_workspace.py):
    most tests are about something else and read the incident in the channel they declared it in.
    """
    overrides.setdefault("incident_workspace", "in-place")
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


# --- the order of the run -------------------------------------------------------------------------


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests marked `stops_services` to the end of the run, keeping the collected order
    within both groups (a stable partition, whatever the file names).

    They stop or kill services every other test shares (PostgreSQL, Redis, S3, the engine, the
    backend's processes); each puts its service back, but no other test should depend on that.
    """
    stopping = [item for item in items if item.get_closest_marker("stops_services") is not None]
    if stopping:
        items[:] = [item for item in items if item.get_closest_marker("stops_services") is None] + stopping


# The fixtures the running test asked for (directly or not), so helpers can check what it declared.
_declared: dict[str, frozenset[str]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note the fixtures the test about to run depends on."""
    _declared["fixtures"] = frozenset(getattr(item, "fixturenames", ()))


def require_fixture(name: str, what: str) -> None:
    """Fail the running test if it uses `what` without depending on the fixture `name`."""
    declared = _declared.get("fixtures")
    if declared is not None and name not in declared:
        raise AssertionError(f"{what} needs the `{name}` fixture: ask for it (or for one that does)")


# --- the machine's services ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> str:
    """The machine's PostgreSQL on 127.0.0.1:5432, started if it does not answer; the admin DSN.

    The bot's default state database is created too: a bot served by a test keeps its records
    there, and on a fresh machine nothing else may have made it yet (the sandbox does, when up).
    """
    dsn = ensure_postgres()
    asyncio.run(ensure_database(make_settings().state_database_url))
    return dsn


@pytest.fixture(scope="session")
def redis() -> str:
    """The machine's Redis on 127.0.0.1:6379, started if it does not answer; its URL."""
    return ensure_redis()


@pytest.fixture(scope="session")
def sandbox(postgres: str, redis: str) -> SandboxStatus:
    """Bring the sandbox up once per session (reused if already running), v2.0.5, no faults.

    The platform it stands in for includes the machine's PostgreSQL and Redis.
    """
    return ensure_sandbox(make_settings())


async def recreate_database(name: str) -> str:
    """Drop and create a database on the local server; return its DSN (needs the `postgres` fixture)."""
    require_fixture("postgres", "recreate_database")
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API on loopback that checks every call against Slack's spec."""
    with FakeSlack(tokens={BOT_TOKEN}) as fake:
        yield fake
        assert fake.violations == [], fake.violations


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
