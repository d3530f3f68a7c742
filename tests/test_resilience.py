"""The bot under load and faults: fast acks, nothing lost, restarts and replicas safe."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.runtime import Runtime
from bot.state import migrate
from bot.web.server import report_interrupted
from commands.destructive import Execution
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, make_settings, recreate_database
from tests.fakes import FakeSlack, signed_slash_command_request
from tests.gate_helpers import (
    DRILL_KEY,
    SECRET_KEY,
    drill_command,  # noqa: F401  (autouse fixture)
    drill_value,
    gate_world,
    run_drill,
)
from tests.netutil import free_port, silent_server
from tests.test_slack_app import block_text, running_bot

REPO = Path(__file__).resolve().parents[1]
OPS1, OPS2 = "U0OPS0001", "U0OPS0002"


async def test_200_commands_with_every_backend_hung_are_all_acked_and_all_answered(
    fake_slack: FakeSlack,
) -> None:
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        overrides = {
            "api_url": f"http://{hung}",
            "prometheus_url": f"http://{hung}",
            "s3_endpoint_url": f"http://{hung}",
            "redis_url": f"redis://{hung}/0",
            "platform_database_url": f"postgresql://postgres@{hung}/platform",
            "state_database_url": "postgresql://postgres@127.0.0.1:5432/chatops_state",
            "docker_host": f"tcp://{hung}",
            "dependency_timeout_seconds": 1.0,
        }
        async with running_bot(fake_slack, **overrides) as (url, _):
            # One channel each: Slack paces posts per channel, and so does the bot.
            requests = [
                signed_slash_command_request(SIGNING_SECRET, command="/health", channel_id=f"C{index:08d}")
                for index in range(200)
            ]
            async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=200)) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(f"{url}/slack/events", content=body, headers=headers)
                        for body, headers in requests
                    )
                )
            assert [response.status_code for response in responses] == [200] * 200
            deadline = time.monotonic() + 60
            while len(fake_slack.calls_to("chat.postMessage")) < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 200
    assert len({call.params["channel"] for call in posts}) == 200
    for call in posts:
        text = block_text(call.params["blocks"])
        assert "Health: DOWN" in text and "*api* down (timeout)" in text


async def test_two_replicas_run_a_destructive_request_once() -> None:
    world = await gate_world("chatops_test_replicas")
    other = Runtime.build(world.runtime.services.settings)  # a second replica: its own pools, same databases
    other.gate.clock = world.clock
    try:
        await world.runtime.services.redis.client.delete(DRILL_KEY)
        await world.enroll(OPS1)
        await world.enroll(OPS2)
        first = await world.confirm(await world.propose(await proposal(world, OPS1), OPS1), OPS1)
        second = await world.confirm(await world.propose(await proposal(world, OPS2), OPS2), OPS2)
        os.environ["DRILL_DELAY"] = "0.5"

        async def publish(steps: object) -> None:
            return None

        outcomes = await asyncio.gather(
            world.runtime.gate.execute(first.approval, publish),
            other.gate.execute(second.approval, publish),
            # The same approval again, from the other replica (a retry, a double click).
            other.gate.execute(first.approval, publish),
            return_exceptions=True,
        )
    finally:
        os.environ.pop("DRILL_DELAY", None)
        await other.services.aclose()
    try:
        assert sum(isinstance(item, Execution) for item in outcomes) == 1, outcomes
        assert await drill_value(world.runtime.services) == 1
    finally:
        await world.runtime.services.aclose()


async def proposal(world: object, user: str) -> object:
    from tests.gate_helpers import GateWorld

    assert isinstance(world, GateWorld)
    return await run_drill(world.runtime.services, ["1"], world.invocation(user))


_EXECUTE_AND_HANG = """
import asyncio, os, sys, uuid
from bot.config import Settings
from bot.runtime import Runtime
from tests.gate_helpers import register_drill
register_drill()
async def main():
    runtime = Runtime.build(Settings(_env_file=None))
    approval = await runtime.gate.load(uuid.UUID(sys.argv[1]))
    async def publish(steps):
        if steps:
            print(steps[-1].name, steps[-1].status, flush=True)
    await runtime.gate.execute(approval, publish)
asyncio.run(main())
"""


async def test_an_operation_cut_by_a_killed_bot_is_reported_as_interrupted(fake_slack: FakeSlack) -> None:
    world = await gate_world("chatops_test_interrupted", lock_lease_seconds=5)
    try:
        await world.runtime.services.redis.client.delete(DRILL_KEY)
        await world.enroll(OPS1)
        approval = await world.propose(await proposal(world, OPS1), OPS1)
        await world.runtime.gate.attach_message(approval.id, "1700000000.000100")
        confirmation = await world.confirm(approval, OPS1)
        settings = world.runtime.services.settings
        env = {
            **os.environ,
            "CHATOPS_STATE_DATABASE_URL": settings.state_database_url,
            "CHATOPS_SECRET_KEY": SECRET_KEY,
            "CHATOPS_OPERATORS": OPS1,
            "CHATOPS_ENVIRONMENT": "test",
            "CHATOPS_LOCK_LEASE_SECONDS": "5",
            "DRILL_DELAY": "120",
        }
        bot = subprocess.Popen(
            [sys.executable, "-c", _EXECUTE_AND_HANG, str(confirmation.approval.id)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert bot.stdout is not None
            assert (await asyncio.to_thread(bot.stdout.readline)).split() == ["add", "running"]
        finally:
            bot.send_signal(signal.SIGKILL)
            bot.wait(timeout=10)
        assert await world.runtime.gate.recover_interrupted() == []  # its lease is still live
        await asyncio.sleep(5.5)
        restarted = Runtime.build(
            settings.model_copy(
                update={
                    "slack_bot_token": __import__("pydantic").SecretStr(BOT_TOKEN),
                    "slack_api_url": fake_slack.url,
                }
            )
        )
        try:
            await report_interrupted(restarted)
        finally:
            await restarted.services.aclose()
        found = await world.runtime.gate.load(approval.id)
        assert found is not None and found.status == "interrupted"
        notice = fake_slack.calls_to("chat.postMessage")[0]
        assert notice.params["thread_ts"] == "1700000000.000100"
        assert "stopped while `/drill 1` was running" in notice.params["text"]
        assert "add: running" in notice.params["text"]
        assert await drill_value(world.runtime.services) == 0
    finally:
        await world.runtime.services.aclose()


async def test_sigterm_lets_acknowledged_commands_finish(fake_slack: FakeSlack) -> None:
    port = free_port()
    dsn = await recreate_database("chatops_test_drain")
    with silent_server() as hung_port:
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "CHATOPS_SLACK_API_URL": fake_slack.url,
            "CHATOPS_HTTP_PORT": str(port),
            "CHATOPS_STATE_DATABASE_URL": dsn,
            # A hung API makes /health take its whole timeout: the answer comes after SIGTERM.
            "CHATOPS_API_URL": f"http://127.0.0.1:{hung_port}",
            "CHATOPS_DEPENDENCY_TIMEOUT_SECONDS": "2",
        }
        bot = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=REPO, env=env)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(100):
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                body, headers = signed_slash_command_request(SIGNING_SECRET, command="/health")
                response = await client.post(
                    f"http://127.0.0.1:{port}/slack/events", content=body, headers=headers
                )
                assert response.status_code == 200
            bot.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(bot.wait, 20)
        finally:
            if bot.poll() is None:
                bot.kill()
    assert code == 0
    [post] = fake_slack.calls_to("chat.postMessage")
    assert "*api* down (timeout)" in block_text(post.params["blocks"])


async def test_migrations_are_applied_once_by_replicas_starting_together() -> None:
    dsn = await recreate_database("chatops_test_migrate_race")
    runtimes = [Runtime.build(make_settings(state_database_url=dsn)) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(item.services.state_db) for item in runtimes))
    finally:
        for item in runtimes:
            await item.services.aclose()
    assert sorted(len(item) for item in applied)[-1] > 0
    assert sum(len(item) for item in applied) == max(len(item) for item in applied)


@pytest.fixture(autouse=True)
def _no_delay_left() -> None:
    os.environ.pop("DRILL_DELAY", None)
