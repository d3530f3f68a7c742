"""A firing alert triages itself into its thread, once per group; the way back is planned through the gate."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.render.changes import WAY_BACK_ACTION
from bot.web.alert_triage import triage_tokens
from commands.alert import Alert
from commands.triage_checklist import load_checklist
from sandbox.manager import SandboxStatus
from tests.fakes import FakeSlack
from tests.gate_helpers import SECRET_KEY, drill_command
from tests.incident_helpers import CHANNEL, USER, Bot, block_text, incident_bot
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


# --- bad input: alerts that say little, sources that are down -------------------------------------


def test_the_triage_judges_over_the_window_of_the_rule_that_fired() -> None:
    def alert(expression: str | None) -> Alert:
        body = alertmanager_alert()
        body["generatorURL"] = (
            f"http://prometheus:9090/graph?{urlencode({'g0.expr': expression, 'g0.tab': '1'})}"
            if expression is not None
            else ""
        )
        return Alert.model_validate(body)

    ratio = 'sum(rate(x{status=~"5.."}[1m])) / sum(rate(x[1m])) > 0.05'
    assert alert(ratio).expression_window() == timedelta(minutes=1)
    assert alert("max_over_time(rate(x[5m])[1h:30s]) > 1").expression_window() == timedelta(hours=1)
    assert alert("up == 0").expression_window() is None and alert(None).expression_window() is None
    assert triage_tokens(alert(ratio)) == ["window=1m"]
    assert triage_tokens(alert("rate(x[90s]) > 1")) == ["window=90s"]
    # Outside what /triage takes (10 s to 24 h), or nothing to read: the checklist's own window.
    assert triage_tokens(alert("rate(x[5s]) > 1")) == []
    assert triage_tokens(alert("rate(x[2d]) > 1")) == []
    assert triage_tokens(alert("up == 0")) == [] and triage_tokens(None) == []


OWN_DB = "chatops_test_alert_bad_input"


def labelless_alert(fingerprint: str) -> dict[str, Any]:
    """An alert from some other rule: a name, nothing else (no severity, no area, no expression)."""
    body = alertmanager_alert(fingerprint=fingerprint, alertname="SomethingOdd")
    body["labels"] = {"alertname": "SomethingOdd"}
    body["annotations"] = {}
    body["generatorURL"] = ""
    return body


async def test_an_alert_without_known_labels_triages_the_whole_checklist_unless_triage_is_off(
    fake_slack: FakeSlack, sandbox: SandboxStatus
) -> None:
    async with incident_bot(fake_slack, database=OWN_DB, alert_triage_severity="critical") as bot:
        await send(bot, notification(labelless_alert("d4d4d4d4d4d4d4d4")))
        [post] = alert_posts(fake_slack)
        findings = await bot.posted(
            lambda call: (
                call.params.get("thread_ts") == post.response["ts"]
                and str(call.params.get("text", "")).startswith("Triage:")
            ),
            timeout=60,
        )
    every = len(load_checklist(None).enabled())
    assert f"{every} checks" in block_text(findings.params["blocks"]), block_text(findings.params["blocks"])
    async with incident_bot(fake_slack, database=OWN_DB, alert_triage_severity="none") as bot:
        await send(bot, notification(labelless_alert("e5e5e5e5e5e5e5e5")))
        post = alert_posts(fake_slack)[-1]
        await asyncio.sleep(2)  # it would have started at once
    assert triage_posts(fake_slack, post.response["ts"]) == []


BREACHED_CHECKLIST = """\
window: 1m
timeout_seconds: 3
advice:
  look:
    title: Look
    source: the test
    steps: ["Look."]
checks:
  - id: always_breached
    title: Always breached
    kind: promql
    query: vector(1)
    unit: count
    critical: 0.5
    advice: [look]
  - id: containers_running
    title: Containers running
    kind: containers
    measure: running
    critical: 0
"""


async def triaged_thread(bot: Bot, fake: FakeSlack, fingerprint: str) -> str:
    """Send a critical alert; return the text of the triage posted in its thread."""
    await send(bot, notification(alertmanager_alert(fingerprint=fingerprint)))
    post = alert_posts(fake)[-1]
    findings = await bot.posted(
        lambda call: (
            call.params.get("thread_ts") == post.response["ts"]
            and str(call.params.get("text", "")).startswith("Triage:")
        ),
        timeout=60,
    )
    return block_text(findings.params["blocks"])


async def test_prometheus_down_during_the_correlation_is_named_in_the_findings(
    fake_slack: FakeSlack, sandbox: SandboxStatus, tmp_path: Path
) -> None:
    checklist = tmp_path / "checklist.yaml"
    checklist.write_text(BREACHED_CHECKLIST)
    async with incident_bot(
        fake_slack,
        database=OWN_DB,
        alert_triage_severity="critical",
        triage_checklist=checklist,
        prometheus_url="http://127.0.0.1:9",  # nothing listens: the bot alone is blind to metrics
        dependency_timeout_seconds=2,
    ) as bot:
        text = await triaged_thread(bot, fake_slack, "f6f6f6f6f6f6f6f6")
    assert "could not check" in text  # the finding itself: Prometheus did not answer
    assert "the onset of Always breached is unknown: Prometheus: " in text, text
    assert "Containers running" in text  # the rest of the checklist still answered


async def test_the_engine_down_during_the_correlation_is_named_in_the_findings(
    fake_slack: FakeSlack, sandbox: SandboxStatus, tmp_path: Path
) -> None:
    checklist = tmp_path / "checklist.yaml"
    checklist.write_text(BREACHED_CHECKLIST)
    async with incident_bot(
        fake_slack,
        database=OWN_DB,
        alert_triage_severity="critical",
        triage_checklist=checklist,
        docker_host=f"unix://{tmp_path}/no-engine.sock",  # the bot alone cannot reach the engine
        dependency_timeout_seconds=2,
    ) as bot:
        text = await triaged_thread(bot, fake_slack, "a7a7a7a7a7a7a7a7")
    assert "changes seen by the engine are missing: " in text, text
    assert "Always breached" in text and "could not check" in text  # Containers running: the engine
