"""The bot under load and faults: fast acks, nothing lost, restarts and replicas safe."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from bot.gate.gate import Approval, Refused
from bot.runtime import Runtime
from bot.state import migrate, migration_files
from bot.web.server import report_interrupted
from commands.destructive import Execution, Step
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

# Every test here keeps the bot's state in the machine's PostgreSQL.
pytestmark = pytest.mark.usefixtures("postgres")


async def test_200_commands_with_every_backend_hung_are_all_acked_and_all_answered(
    fake_slack: FakeSlack,
) -> None:
    state_dsn = await recreate_database("chatops_test_load")
    with silent_server() as port:
        hung = f"127.0.0.1:{port}"
        overrides = {
            "api_url": f"http://{hung}",
            "prometheus_url": f"http://{hung}",
            "s3_endpoint_url": f"http://{hung}",
            "redis_url": f"redis://{hung}/0",
            "platform_database_url": f"postgresql://postgres@{hung}/platform",
            "state_database_url": state_dsn,
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


@pytest.mark.usefixtures("redis")
async def test_two_replicas_run_a_destructive_request_once() -> None:
    world = await gate_world("chatops_test_replicas")
    other = Runtime.build(world.runtime.services.settings)  # a second replica: its own pools, same databases
    other.gate.clock = world.clock
    state_db = world.runtime.services.state_db
    try:
        await world.runtime.services.redis.client.delete(DRILL_KEY)
        await world.enroll(OPS1)
        await world.enroll(OPS2)
        first = await world.confirm(await world.propose(await proposal(world, OPS1), OPS1), OPS1)
        second = await world.confirm(await world.propose(await proposal(world, OPS2), OPS2), OPS2)
        async with state_db.connection() as conn:
            trail_before = await conn.fetchval("SELECT max(id) FROM audit_trail")
        # Whoever takes the lock holds it, mid-operation, until the two others have been answered.
        others_answered = asyncio.Event()
        answered: list[object] = []

        async def publish(steps: list[Step]) -> None:
            if steps and steps[-1].status == "running":
                await others_answered.wait()

        async def attempt(runtime: Runtime, approval: Approval) -> object:
            try:
                outcome: object = await runtime.gate.execute(approval, publish)
            except Exception as error:
                outcome = error
            answered.append(outcome)
            if len(answered) == 2:
                others_answered.set()
            return outcome

        outcomes = await asyncio.wait_for(
            asyncio.gather(
                attempt(world.runtime, first.approval),
                attempt(other, second.approval),
                # The same approval again, from the other replica (a retry, a double click).
                attempt(other, first.approval),
            ),
            timeout=60,
        )
    finally:
        await other.services.aclose()
    try:
        # One ran; the two others were refused because the lock was held, while it was.
        [ran] = [item for item in outcomes if isinstance(item, Execution)]
        assert ran.succeeded, ran
        refused = [item for item in outcomes if not isinstance(item, Execution)]
        assert [type(item) for item in refused] == [Refused, Refused], outcomes
        assert [item.reason for item in refused if isinstance(item, Refused)] == ["locked", "locked"]
        assert answered[-1] is ran  # the winner finished after both refusals
        # Nothing ran twice: the counter moved once, one approval succeeded, and the other was
        # refused for the lock (a retry of the running one does not change it).
        assert await drill_value(world.runtime.services) == 1
        async with state_db.connection() as conn:
            statuses = {
                row["id"]: (row["status"], row["status_reason"])
                for row in await conn.fetch("SELECT id, status, status_reason FROM approvals")
            }
            trail = await conn.fetch(
                "SELECT decision, outcome, actor FROM audit_trail WHERE id > $1 ORDER BY id", trail_before
            )
        winner = first.approval if statuses[first.approval.id][0] == "succeeded" else second.approval
        loser = second.approval if winner is first.approval else first.approval
        assert statuses[winner.id] == ("succeeded", "added")
        assert statuses[loser.id] == ("refused", "lock held")
        # The audit trail: exactly one execution, by the winner's requester, and both refusals.
        assert sorted((row["decision"], row["outcome"]) for row in trail) == [
            ("executed", "succeeded"),
            ("refused", "locked"),
            ("refused", "locked"),
        ]
        assert [row["actor"] for row in trail if row["decision"] == "executed"] == [winner.requester]
        assert (await world.runtime.trail.verify()).ok
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


@pytest.mark.usefixtures("redis")
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


@pytest.mark.usefixtures("redis")  # the bot's /health asks the machine's Redis too
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
    # One replica applied every migration, in order; the three others found nothing left to do.
    every = [version for version, _ in migration_files()]
    assert sorted(applied, key=len) == [[], [], [], every], applied
    conn = await asyncpg.connect(dsn)
    try:
        recorded = [row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(recorded) == every


@pytest.fixture(autouse=True)
def _no_delay_left() -> None:
    os.environ.pop("DRILL_DELAY", None)
