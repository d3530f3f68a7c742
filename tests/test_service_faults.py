"""Each real service stopped under a running bot: the bot says what failed, then recovers by itself.

Marked `stops_services`: it stops the machine's own PostgreSQL and Redis for a few seconds, which
every other test needs, so tests/conftest.py runs it after every test that is not marked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sandbox import manager
from sandbox.manager import SandboxStatus
from tests.conftest import make_settings
from tests.fakes import FakeSlack
from tests.local_services import start_postgres, start_redis, stop_postgres, stop_redis
from tests.test_slack_app import block_text, post_command, running_bot

pytestmark = pytest.mark.stops_services

SETTINGS = make_settings()
SERVICES: dict[str, tuple[Callable[[], object], Callable[[], object], set[str]]] = {
    "postgresql": (stop_postgres, start_postgres, {"postgres", "state-db"}),
    "redis": (stop_redis, start_redis, {"redis"}),
    "s3": (lambda: manager.stop_s3(SETTINGS), lambda: manager.start_s3(SETTINGS), {"storage"}),
    "prometheus": (
        lambda: manager.stop_prometheus(SETTINGS),
        lambda: manager.start_prometheus(SETTINGS),
        {"prometheus"},
    ),
    "engine": (lambda: manager.stop_podman(SETTINGS), lambda: manager.start_podman(SETTINGS), {"engine"}),
}


async def health_text(url: str, fake: FakeSlack) -> str:
    fake.reset()
    assert (await post_command(url, "/health")).status_code == 200
    call = await fake.wait_for_call_async("chat.postMessage", timeout=20)
    return block_text(call.params["blocks"])


@pytest.mark.parametrize("service", list(SERVICES))
async def test_a_stopped_service_is_named_and_the_bot_recovers_without_a_restart(
    sandbox: SandboxStatus, fake_slack: FakeSlack, service: str
) -> None:
    stop, start, components = SERVICES[service]
    async with running_bot(fake_slack) as (url, runtime):
        assert "Health: HEALTHY" in await health_text(url, fake_slack)  # pools and clients warmed up
        await asyncio.to_thread(stop)
        try:
            during = await health_text(url, fake_slack)
        finally:
            await asyncio.to_thread(start)
        for component in components:
            assert f"*{component}* down" in during, during
        others = {"api", "postgres", "redis", "storage", "prometheus", "engine", "state-db"} - components
        for component in others:
            assert f"*{component}* ok" in during, during
        # Back without restarting the bot: its pools and clients reconnect by themselves.
        deadline = time.monotonic() + 30
        after = await health_text(url, fake_slack)
        while "Health: HEALTHY" not in after and time.monotonic() < deadline:
            await asyncio.sleep(1)
            after = await health_text(url, fake_slack)
        assert "Health: HEALTHY" in after, after
        # Nothing the bot keeps was corrupted on the way.
        assert (await runtime.trail.verify()).ok
