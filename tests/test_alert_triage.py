"""A firing alert triages itself into its thread, once per group; the way back is planned through the gate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.render.changes import WAY_BACK_ACTION
from sandbox.manager import SandboxStatus
from tests.fakes import FakeSlack
from tests.gate_helpers import SECRET_KEY, drill_command
from tests.incident_helpers import CHANNEL, USER, Bot, incident_bot
from tests.test_alerts import alert_posts, alertmanager_alert, notification, send

_ = drill_command  # the autouse fixture that registers /drill (a destructive command for tests)

pytestmark = pytest.mark.usefixtures("postgres")


def triage_posts(fake: FakeSlack, thread: str) -> list[Any]:
    return [
        call
        for call in fake.calls_to("chat.postMessage")
        if call.params.get("thread_ts") == thread and str(call.params.get("text", "")).startswith("Triage:")
    ]


async def test_a_critical_alert_triages_itself_once_per_group(
    fake_slack: FakeSlack, sandbox: SandboxStatus
) -> None:
    async with incident_bot(fake_slack, alert_triage_severity="critical") as bot:
        await send(bot, notification(alertmanager_alert(fingerprint="a1a1a1a1a1a1a1a1")))
        [first] = alert_posts(fake_slack)
        thread = first.response["ts"]
        findings = await bot.posted(
            lambda call: call.params.get("thread_ts") == thread and "Triage:" in str(call.params.get("text")),
            timeout=60,
        )
        # The same group fires again with another alert (a flapping group): not triaged again.
        await send(bot, notification(alertmanager_alert(fingerprint="b2b2b2b2b2b2b2b2")))
        second = next(post for post in alert_posts(fake_slack) if post is not first)
        told = await bot.posted(
            lambda call: (
                call.params.get("thread_ts") == second.response["ts"]
                and "Not triaged again" in str(call.params.get("text"))
            ),
            timeout=30,
        )
    assert findings.params["channel"] == CHANNEL
    assert "cool-down" in told.params["text"]
    assert len(triage_posts(fake_slack, thread)) == 1
    assert triage_posts(fake_slack, second.response["ts"]) == []


async def test_a_warning_does_not_triage_itself(fake_slack: FakeSlack) -> None:
    warning = alertmanager_alert(fingerprint="c3c3c3c3c3c3c3c3")
    warning["labels"]["severity"] = "warning"
    async with incident_bot(fake_slack, alert_triage_severity="critical") as bot:
        await send(bot, notification(warning))
        [post] = alert_posts(fake_slack)
        await asyncio.sleep(2)  # it would have started at once
    assert triage_posts(fake_slack, post.response["ts"]) == []


async def way_back_click(bot: Bot, user: str, value: dict[str, Any]) -> None:
    await bot.click(WAY_BACK_ACTION, json.dumps(value), user=user, message_ts="1700000000.000200")


@pytest.mark.usefixtures("redis")
async def test_the_way_back_is_planned_for_an_operator_never_run(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, secret_key=SECRET_KEY, operators=[USER]) as bot:
        await bot.runtime.mfa.enroll(USER)
        async with bot.runtime.services.state_db.connection() as conn:
            await conn.execute("UPDATE mfa_enrollments SET confirmed_at = now() WHERE user_id = $1", USER)
        await way_back_click(bot, USER, {"command": "drill", "tokens": ["1"]})
        plan = await bot.posted(lambda call: "Plan:" in str(call.params.get("text")), timeout=15)
        await way_back_click(bot, "U0VIEWER01", {"command": "drill", "tokens": ["1"]})
        refused = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=15)
        await way_back_click(bot, USER, {"command": "health", "tokens": []})
        not_a_plan = await fake_slack.wait_for_call_async(
            "chat.postEphemeral",
            predicate=lambda call: "does not name a plan" in call.params["text"],
            timeout=15,
        )
        async with bot.runtime.services.state_db.connection() as conn:
            statuses = [row["status"] for row in await conn.fetch("SELECT status FROM approvals")]
            refusals = await conn.fetch(
                "SELECT actor, outcome FROM audit_trail WHERE decision = 'refused' AND action = 'drill'"
            )
    # A plan with Confirm and Cancel in the thread of the findings; nothing ran.
    assert plan.params["thread_ts"] == "1700000000.000200"
    assert [element["text"]["text"] for element in plan.params["blocks"][-1]["elements"]] == [
        "Confirm",
        "Cancel",
    ]
    assert statuses == ["pending"]
    assert "needs an operator" in refused.params["text"]
    assert [(row["actor"], row["outcome"]) for row in refusals] == [("U0VIEWER01", "not_authorised")]
    assert not_a_plan.params["user"] == USER
