"""The App Home tab: open incidents, plans waiting for me (Confirm through the same gate), my MFA, the
last /health verdict — published when the tab is opened (a signed `app_home_opened` event)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bot.gate.mfa import code_at
from bot.render.gate import CONFIRM_ACTION, MFA_VIEW, TOTP_BLOCK
from bot.runtime import Runtime
from tests.conftest import SIGNING_SECRET, recreate_database
from tests.fakes import (
    FakeSlack,
    block_actions_payload,
    sign,
    signed_interaction_request,
    view_submission_payload,
)
from tests.gate_helpers import (
    DRILL_KEY,
    SECRET_KEY,
    FrozenClock,
    drill_command,  # noqa: F401  (autouse fixture: /drill, a destructive command for tests)
    drill_value,
)
from tests.incident_helpers import CHANNEL, OTHER_USER, USER, block_text
from tests.test_slack_app import post_command, running_bot

pytestmark = pytest.mark.usefixtures("postgres", "redis")


@asynccontextmanager
async def home_bot(fake: FakeSlack) -> AsyncIterator[tuple[str, Runtime, FrozenClock, dict[str, str]]]:
    """The bot with MFA on, two operators (one enrolled), /drill needing two people, a frozen clock."""
    dsn = await recreate_database("chatops_test_app_home")
    fake.add_user(USER, "oncall")
    fake.add_user(OTHER_USER, "alice")
    async with running_bot(
        fake,
        state_database_url=dsn,
        secret_key=SECRET_KEY,
        operators=[USER, OTHER_USER],
        two_person_commands=["drill"],
        incident_channel=CHANNEL,
        dependency_timeout_seconds=0.5,
    ) as (url, runtime):
        clock = FrozenClock(now=datetime.now(UTC).replace(microsecond=0))
        runtime.gate.clock = clock
        enrollment = await runtime.mfa.enroll(USER)
        assert (
            await runtime.mfa.verify(USER, code_at(enrollment.secret, clock.now), clock.now, confirming=True)
        ).accepted
        clock.advance(30)
        await runtime.services.redis.client.delete(DRILL_KEY)
        yield url, runtime, clock, {USER: enrollment.secret}


async def open_home(url: str, fake: FakeSlack, user: str) -> dict[str, Any]:
    """Open the Home tab as Slack reports it (Events API); return the view the bot published."""
    before = len(fake.calls_to("views.publish"))
    envelope = {
        "token": "verification-token",
        "team_id": "T0CHATOPS1",
        "api_app_id": "A0CHATOPS1",
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME0001", "tab": "home"},
    }
    body = json.dumps(envelope).encode()
    headers = {"Content-Type": "application/json", **sign(SIGNING_SECRET, body)}
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(f"{url}/slack/events", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    for _ in range(1000):
        published = fake.calls_to("views.publish")[before:]
        if published and published[0].response is not None:
            assert published[0].params["user_id"] == user
            view: dict[str, Any] = published[0].params["view"]
            return view
        await asyncio.sleep(0.01)
    raise AssertionError("the Home tab was not published")


def buttons(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [block["accessory"] for block in view["blocks"] if "accessory" in block]


async def click_from_home(url: str, action_id: str, value: str, user: str) -> None:
    """Click a button of the Home tab: a view container, no channel, no response_url."""
    payload = block_actions_payload(action_id, value, user_id=user)
    for key in ("channel", "message", "response_url"):
        payload.pop(key)
    payload["container"] = {"type": "view", "view_id": "V0HOME0001"}
    payload["view"] = {"id": "V0HOME0001", "type": "home", "blocks": [], "callback_id": ""}
    body, headers = signed_interaction_request(SIGNING_SECRET, payload)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(f"{url}/slack/events", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


async def test_the_home_tab_shows_incidents_plans_mfa_and_health(fake_slack: FakeSlack) -> None:
    async with home_bot(fake_slack) as (url, runtime, _clock, _seeds):
        empty = await open_home(url, fake_slack, USER)
        await post_command(url, "/incident", "declare Checkout returns 5xx sev=P1")
        await fake_slack.wait_for_call_async("pins.add", timeout=10)
        await post_command(url, "/incident", "update rolling back")
        await fake_slack.wait_for_call_async(
            "chat.postMessage", lambda call: "rolling back" in str(call.params)
        )
        await post_command(url, "/health")
        health = await fake_slack.wait_for_call_async(
            "chat.postMessage",
            lambda call: str(call.params.get("text", "")).startswith("Health:"),
            timeout=20,
        )
        await post_command(url, "/drill", "4")
        plan = await fake_slack.wait_for_call_async(
            "chat.postMessage", lambda call: "Plan:" in str(call.params)
        )
        approval = plan.params["blocks"][-1]["elements"][0]["value"]
        mine = await open_home(url, fake_slack, USER)
        theirs = await open_home(url, fake_slack, OTHER_USER)
        async with runtime.services.state_db.connection() as conn:
            verdict = await conn.fetchval(
                "SELECT verdict FROM command_runs WHERE command = 'health' ORDER BY started_at DESC LIMIT 1"
            )
    assert "No open incidents." in block_text(empty["blocks"]) and "no /health has run yet" in block_text(
        empty["blocks"]
    )
    shown = block_text(mine["blocks"])
    assert "*INC-1 · P1* Checkout returns 5xx" in shown
    assert re.search(rf"Commander <@{USER}> · open \d+ min · last update \d+ min ago · <#{CHANNEL}>", shown)
    assert "Add 4 to the drill counter" in shown
    assert [(button["action_id"], button["value"]) for button in buttons(mine)] == [
        (CONFIRM_ACTION, approval)
    ]
    assert "enrolled: you can confirm destructive plans" in shown
    assert verdict in ("healthy", "degraded", "down") and f"*{verdict}*" in shown
    assert str(health.params["text"]).lower().startswith(f"health: {verdict}")
    # Someone else: the incidents are theirs too, the plan is not (it waits for its requester).
    other = block_text(theirs["blocks"])
    assert "INC-1 · P1" in other and buttons(theirs) == [] and "not enrolled" in other
    assert fake_slack.violations == []


async def test_confirm_from_the_home_tab_goes_through_the_same_gate(fake_slack: FakeSlack) -> None:
    async with home_bot(fake_slack) as (url, runtime, clock, seeds):
        await post_command(url, "/drill", "3")
        plan = await fake_slack.wait_for_call_async(
            "chat.postMessage", lambda call: "Plan:" in str(call.params)
        )
        approval = plan.params["blocks"][-1]["elements"][0]["value"]
        # Not the requester: the gate refuses, and says so by DM (the Home tab has no channel).
        await click_from_home(url, CONFIRM_ACTION, approval, OTHER_USER)
        refused = await fake_slack.wait_for_call_async(
            "chat.postMessage", lambda call: call.params.get("channel") == OTHER_USER
        )
        # The requester: the gate's MFA modal, then the first approval of two.
        await click_from_home(url, CONFIRM_ACTION, approval, USER)
        opened = await fake_slack.wait_for_call_async("views.open", timeout=10)
        submission = view_submission_payload(
            MFA_VIEW,
            {TOTP_BLOCK: {"value": {"type": "plain_text_input", "value": code_at(seeds[USER], clock.now)}}},
            private_metadata=approval,
            user_id=USER,
        )
        body, headers = signed_interaction_request(SIGNING_SECRET, submission)
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(f"{url}/slack/events", content=body, headers=headers)
        await fake_slack.wait_for_call_async(
            "chat.update", lambda call: call.params.get("ts") == plan.response["ts"]
        )  # type: ignore[index]
        # Now it waits for a second operator: on their Home tab, not on the requester's.
        theirs = await open_home(url, fake_slack, OTHER_USER)
        mine = await open_home(url, fake_slack, USER)
        counter = await drill_value(runtime.services)
    assert "only the person who asked can confirm this plan" in str(refused.params["text"])
    assert (
        opened.params["view"]["callback_id"] == MFA_VIEW
        and opened.params["view"]["private_metadata"] == approval
    )
    assert [button["value"] for button in buttons(theirs)] == [approval]
    assert "second approval (asked by" in block_text(theirs["blocks"])
    assert buttons(mine) == [] and counter == 0  # nothing ran: the second approval is still to come
    assert fake_slack.violations == []
