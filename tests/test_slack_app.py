"""The bot in Slack: signed slash commands over real HTTP, answers through the fake Web API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bot.listeners.app import build_slack_app
from bot.runtime import Runtime
from bot.state import migrate
from bot.web.server import build_web_app
from sandbox.manager import SandboxStatus
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, make_settings, recreate_database, serve_app
from tests.fakes import FakeSlack, signed_slash_command_request
from tests.netutil import free_port

CHANNEL = "C0INCIDENT"
USER = "U0ONCALL01"


@asynccontextmanager
async def running_bot(fake: FakeSlack, **overrides: Any) -> AsyncIterator[tuple[str, Runtime]]:
    """Serve the bot's real web app (as `chatops serve` builds it) against the fake Slack."""
    settings = make_settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake.url,
        **overrides,
    )
    runtime = Runtime.build(settings)
    await migrate(runtime.services.state_db)
    assert runtime.slack_client is not None
    app = build_web_app(runtime.services, build_slack_app(runtime, runtime.slack_client))
    try:
        async with serve_app(app) as url:
            yield url, runtime
    finally:
        await runtime.services.aclose()


async def post_command(url: str, command: str, text: str = "", **kwargs: Any) -> httpx.Response:
    body, headers = signed_slash_command_request(
        SIGNING_SECRET, command=command, text=text, user_id=USER, channel_id=CHANNEL, **kwargs
    )
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{url}/slack/events", content=body, headers=headers)


def block_text(blocks: list[dict[str, Any]]) -> str:
    """Join every text of a message's blocks, as a reader would see them."""
    parts = []
    for block in blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if isinstance(element, dict) and "text" in element:
                text = element["text"]
                parts.append(text["text"] if isinstance(text, dict) else text)
    return "\n".join(parts)


async def test_health_in_slack_is_acked_then_posted_to_the_channel(
    sandbox: SandboxStatus, fake_slack: FakeSlack
) -> None:
    """The ack does not wait for the command (how fast it comes: benchmarks/ack_bench.py)."""
    events: list[str] = []
    answer = asyncio.Event()
    # A timeout per check well above the time the API is held, so holding it never fails the check.
    async with running_bot(fake_slack, dependency_timeout_seconds=10) as (url, runtime):
        api = runtime.services.api
        real_ping = api.ping

        async def held_ping() -> str:
            events.append("api asked")
            await answer.wait()  # the platform API answers only once the ack is in
            events.append("api answered")
            return await real_ping()

        api.ping = held_ping  # type: ignore[method-assign]
        # Were the ack to wait for the answer, this would time out: the API answers after it.
        response = await post_command(url, "/health")
        assert response.status_code == 200
        events.append("acked")
        assert fake_slack.calls_to("chat.postMessage") == []
        answer.set()
        call = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
    assert "api asked" in events
    assert events.index("acked") < events.index("api answered"), events
    assert call.params["channel"] == CHANNEL
    text = block_text(call.params["blocks"])
    assert "Health: HEALTHY" in text
    for component in ("api", "postgres", "redis", "storage", "prometheus", "engine", "state-db", "slack"):
        assert f"*{component}* ok" in text, component
    assert call.params["text"] == "Health: healthy"


async def test_storage_down_is_named_in_the_slack_report(
    sandbox: SandboxStatus, fake_slack: FakeSlack
) -> None:
    async with running_bot(fake_slack, s3_endpoint_url=f"http://127.0.0.1:{free_port()}") as (url, _):
        assert (await post_command(url, "/health")).status_code == 200
        call = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
    text = block_text(call.params["blocks"])
    assert "Health: DEGRADED" in text
    assert "*storage* down (refused)" in text
    assert "*api* ok" in text


async def test_usage_error_goes_only_to_the_caller(sandbox: SandboxStatus, fake_slack: FakeSlack) -> None:
    async with running_bot(fake_slack) as (url, _):
        assert (await post_command(url, "/health", "everything please")).status_code == 200
        call = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
    assert call.params["user"] == USER and call.params["channel"] == CHANNEL
    assert "unexpected argument `everything`, `please`" in call.params["text"]
    assert fake_slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    ("secret", "age_seconds"),
    [("wrong-secret", 0), (SIGNING_SECRET, 6 * 60)],
    ids=["bad signature", "timestamp over 5 minutes old"],
)
@pytest.mark.usefixtures("postgres")
async def test_unsigned_or_stale_requests_get_401_and_run_nothing(
    fake_slack: FakeSlack, secret: str, age_seconds: int
) -> None:
    state = await recreate_database("chatops_test_slack_app")
    async with running_bot(fake_slack, state_database_url=state) as (url, _):
        body, headers = signed_slash_command_request(
            secret, command="/health", channel_id=CHANNEL, timestamp=int(time.time()) - age_seconds
        )
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{url}/slack/events", content=body, headers=headers)
        assert response.status_code == 401
        await asyncio.sleep(0.5)  # give a wrongly started handler the time to show itself
    assert [call.method for call in fake_slack.calls if call.method != "auth.test"] == []


async def test_the_bot_exposes_its_metrics_and_liveness(
    sandbox: SandboxStatus, fake_slack: FakeSlack
) -> None:
    async with running_bot(fake_slack) as (url, _):
        await post_command(url, "/health")
        await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = (await client.get(f"{url}/metrics")).text
            healthz = (await client.get(f"{url}/healthz")).json()
    assert healthz == {"status": "ok"}
    assert 'chatops_commands_total{command="health",outcome="ok",source="slack"} 1.0' in metrics
    assert "chatops_ack_latency_seconds_count 1.0" in metrics
