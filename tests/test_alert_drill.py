"""The alert drill end to end (issue 19), every part real but Slack: a release that passes /health
but answers 5xx under traffic is deployed through the gate, Prometheus's rule fires, Alertmanager
posts to the bot, the bot posts the alert and triages it by itself into its thread, names the deploy
just before the 5xx rose and offers the way back; an operator plans it, confirms with a TOTP code,
the rollback runs, the alert resolves and its message says so.

Slow (minutes: the rule's window and `for:`, Alertmanager's group_wait): every wait is generous,
and nothing here is timed (benchmarks/alert_drill_bench.py gives the figures).
"""

from __future__ import annotations

import re

import pytest

from bot.render.changes import read_way_back
from sandbox import manager
from sandbox.manager import SandboxStatus
from tests.alert_drill_helpers import drill_bot, findings_in, is_alert, way_back_button
from tests.conftest import make_settings
from tests.fakes import FakeSlack
from tests.incident_helpers import CHANNEL, block_text

pytestmark = pytest.mark.usefixtures("postgres", "redis")


@pytest.mark.stops_services  # swaps the shared backend and re-points Alertmanager, then puts both back
async def test_a_gated_bad_deploy_is_alerted_triaged_traced_and_taken_back(
    sandbox: SandboxStatus, fake_slack: FakeSlack
) -> None:
    async with drill_bot(fake_slack) as drill:
        bot = drill.bot
        # The bad release goes out as any deploy would: an operator's /rollback, through the gate.
        deployed = await drill.deploy("v2.0.6")
        assert "Succeeded" in block_text(deployed.params["blocks"]), block_text(deployed.params["blocks"])

        # Prometheus -> rule -> Alertmanager -> the bot's /alerts -> the alert in the channel.
        alert = await bot.posted(is_alert, timeout=300)
        thread = str((alert.response or {})["ts"])
        # The triage it started by itself, in the alert's thread.
        findings = await bot.posted(findings_in(thread), timeout=120)
        text = block_text(findings.params["blocks"])
        assert findings.params["text"].startswith("Triage: critical"), findings.params["text"]
        assert re.search(r"\*5xx error ratio\*: \d+(\.\d+)? %", text), text
        suspect = r"v2\.0\.6 .*\d+ (s|min) before 5xx error ratio rose from \S+ % to \S+ %"
        assert re.search(suspect, text), text
        button = way_back_button(findings)
        assert button is not None, text
        assert read_way_back(button["value"]) == ("rollback", ["v2.0.5"])
        assert "Plans `/rollback v2.0.5` for an operator" in text

        # The button plans the way back, in the alert's thread; Confirm, the code, and it runs.
        plan = await drill.click_way_back(findings, button)
        assert "Roll back backend to v2.0.5 (from v2.0.6)" in str(plan.params["text"])
        assert plan.params["channel"] == CHANNEL and plan.params["thread_ts"] == thread
        done = await drill.confirm(plan)
        assert "backend runs v2.0.5 and is healthy" in block_text(done.params["blocks"])

        # The 5xx leave the rule's window, the alert resolves, its message says so.
        resolved = await bot.slack.wait_for_call_async(
            "chat.update",
            lambda call: call.params.get("ts") == thread and "RESOLVED" in str(call.params.get("text")),
            timeout=300,
        )
    assert resolved.params["channel"] == CHANNEL
    after = await manager.status(make_settings())
    assert after.component("backend").info["version"] == "v2.0.5", str(after)
    assert after.component("backend").info["health"] == "healthy", str(after)
    assert after.component("alertmanager").info["webhook_url"].endswith(":3000/alerts"), str(after)
