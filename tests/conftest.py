"""Shared fixtures: the sandbox, fresh databases, the fake Slack and the bot served over HTTP."""

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
from sandbox.testing import ensure_sandbox  # noqa: E402
from tests.fakes import FakeSlack  # noqa: E402

# As the CLI does: log lines go to stderr as JSON, so stdout holds only results.
configure_logging("WARNING")

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"


def make_settings(**overrides: Any) -> Settings:
    """Build settings from defaults (the sandbox) plus overrides, ignoring any .env file."""
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def sandbox() -> SandboxStatus:
    """Bring the sandbox up once per session (reused if already running), v2.0.5, no faults."""
    return ensure_sandbox(make_settings())


async def recreate_database(name: str) -> str:
    """Drop and create a database on the local server; return its DSN."""
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
