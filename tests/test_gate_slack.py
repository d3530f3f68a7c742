"""The gate in Slack: plan buttons, the MFA modal, progress in place, refusals — signed, over real HTTP."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest

from bot.gate.mfa import code_at
from bot.render.gate import CANCEL_ACTION, CONFIRM_ACTION, MFA_VIEW, TOTP_BLOCK
from bot.render.mfa import CODE_BLOCK, ENROLL_VIEW, RESET_VIEW
from bot.runtime import Runtime
from tests.conftest import SIGNING_SECRET, recreate_database
from tests.fakes import (
    FakeSlack,
    block_actions_payload,
    signed_interaction_request,
    signed_slash_command_request,
    view_submission_payload,
)
from tests.gate_helpers import (
    DRILL_KEY,
    SECRET_KEY,
    FrozenClock,
    drill_command,  # noqa: F401  (autouse fixture)
    drill_value,
)
from tests.test_slack_app import CHANNEL, USER, block_text, post_command, running_bot

OTHER = "U0OTHER001"

# Every test here keeps the bot's state in the machine's PostgreSQL.
pytestmark = pytest.mark.usefixtures("postgres")


@asynccontextmanager
async def gate_bot(fake: FakeSlack) -> AsyncIterator[tuple[str, Runtime, FrozenClock, dict[str, str]]]:
    """Serve the bot with a fresh state database, MFA on, two operators enrolled, and a frozen clock."""
    dsn = await recreate_database("chatops_test_gate_slack")
    async with running_bot(
        fake, state_database_url=dsn, secret_key=SECRET_KEY, operators=[USER, OTHER], mfa_admins=[USER]
    ) as (url, runtime):
        clock = FrozenClock(now=datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
        runtime.gate.clock = clock
        seeds = {}
        for user in (USER, OTHER):
            enrollment = await runtime.mfa.enroll(user)
            seeds[user] = enrollment.secret
            assert (
                await runtime.mfa.verify(
                    user, code_at(enrollment.secret, clock.now), clock.now, confirming=True
                )
            ).accepted
        clock.advance(30)
        await runtime.services.redis.client.delete(DRILL_KEY)
        yield url, runtime, clock, seeds


async def interact(url: str, payload: dict[str, Any], secret: str = SIGNING_SECRET) -> httpx.Response:
    body, headers = signed_interaction_request(secret, payload)
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{url}/slack/events", content=body, headers=headers)


def totp_values(code: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {TOTP_BLOCK: {"value": {"type": "plain_text_input", "value": code}}}


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_plan_confirm_mfa_and_progress_in_place(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, runtime, clock, seeds):
        await post_command(url, "/drill", "4")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        plan_text = block_text(plan_post.params["blocks"])
        assert "Plan: Add 4 to the drill counter" in plan_text and "counter = 0" in plan_text
        buttons = plan_post.params["blocks"][-1]["elements"]
        assert [button["action_id"] for button in buttons] == [CONFIRM_ACTION, CANCEL_ACTION]
        approval_id = buttons[0]["value"]
        plan_ts = plan_post.response["ts"]

        await interact(url, block_actions_payload(CONFIRM_ACTION, approval_id, message_ts=plan_ts))
        opened = await fake_slack.wait_for_call_async("views.open", timeout=10)
        assert opened.params["view"]["callback_id"] == MFA_VIEW
        assert opened.params["view"]["private_metadata"] == approval_id

        code = code_at(seeds[USER], clock.now)
        submission = view_submission_payload(MFA_VIEW, totp_values(code), private_metadata=approval_id)
        response = await interact(url, submission)
        assert response.status_code == 200 and response.text in ("", "null")  # the modal closes
        final = await fake_slack.wait_for_call_async(
            "chat.update", predicate=lambda call: "Succeeded" in block_text(call.params["blocks"]), timeout=10
        )
        assert final.params["ts"] == plan_ts and final.params["channel"] == CHANNEL
        assert "counter = 4" in block_text(final.params["blocks"])
        updates = [block_text(call.params["blocks"]) for call in fake_slack.calls_to("chat.update")]
        assert any(":hourglass_flowing_sand: add" in text for text in updates)  # progress shown while running
        assert await drill_value(runtime.services) == 4

        # The same submission sent again (signed anew): refused at the door, nothing runs twice.
        replay = await interact(url, submission)
        assert replay.status_code == 401
        assert await drill_value(runtime.services) == 4
        # The gate would have refused it too: a submission of a plan already run is answered in the modal.
        again = view_submission_payload(MFA_VIEW, totp_values(code), private_metadata=approval_id)
        late = await interact(url, again)
        assert late.json()["response_action"] == "errors"
        assert "already" in late.json()["errors"][TOTP_BLOCK]
        assert await drill_value(runtime.services) == 4


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_wrong_code_is_shown_in_the_modal_and_nothing_runs(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, runtime, _clock, _seeds):
        await post_command(url, "/drill", "1")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        approval_id = plan_post.params["blocks"][-1]["elements"][0]["value"]
        wrong = view_submission_payload(MFA_VIEW, totp_values("000000"), private_metadata=approval_id)
        answer = (await interact(url, wrong)).json()
        assert answer == {"response_action": "errors", "errors": {TOTP_BLOCK: "wrong or expired code"}}
        assert await drill_value(runtime.services) == 0
        assert fake_slack.calls_to("chat.update") == []


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_someone_else_clicking_confirm_is_told_no(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, _runtime, _clock, _seeds):
        await post_command(url, "/drill", "1")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        approval_id = plan_post.params["blocks"][-1]["elements"][0]["value"]
        await interact(url, block_actions_payload(CONFIRM_ACTION, approval_id, user_id=OTHER))
        told = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        assert told.params["user"] == OTHER
        assert "only the person who asked can confirm" in told.params["text"]
        assert fake_slack.calls_to("views.open") == []


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_forged_interaction_gets_401_and_runs_nothing(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, runtime, clock, seeds):
        await post_command(url, "/drill", "1")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        approval_id = plan_post.params["blocks"][-1]["elements"][0]["value"]
        code = code_at(seeds[USER], clock.now)
        forged = view_submission_payload(MFA_VIEW, totp_values(code), private_metadata=approval_id)
        response = await interact(url, forged, secret="not-the-signing-secret")
        assert response.status_code == 401
        assert await drill_value(runtime.services) == 0
        approval = await runtime.gate.load(uuid.UUID(approval_id))
        assert approval is not None and approval.status == "pending"


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_cancel_replaces_the_plan(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, _runtime, _clock, _seeds):
        await post_command(url, "/drill", "1")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        approval_id = plan_post.params["blocks"][-1]["elements"][0]["value"]
        await interact(
            url, block_actions_payload(CANCEL_ACTION, approval_id, message_ts=plan_post.response["ts"])
        )
        update = await fake_slack.wait_for_call_async("chat.update", timeout=10)
        assert "Cancelled by <@U0ONCALL01>; nothing was changed." in block_text(update.params["blocks"])


def strings_of(value: Any) -> str:
    """Flatten a call's parameters to text, to look for a secret anywhere in them."""
    return json.dumps(value, default=str)


def code_values(code: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {CODE_BLOCK: {"value": {"type": "plain_text_input", "value": code}}}


async def test_mfa_enroll_shows_the_seed_once_in_a_modal_and_confirms_there(fake_slack: FakeSlack) -> None:
    dsn = await recreate_database("chatops_test_gate_slack")
    async with running_bot(fake_slack, state_database_url=dsn, secret_key=SECRET_KEY) as (url, runtime):
        await post_command(url, "/mfa", "enroll")
        opened = await fake_slack.wait_for_call_async("views.open", timeout=10)
        view = opened.params["view"]
        assert view["callback_id"] == ENROLL_VIEW
        shown = block_text(view["blocks"])
        key = re.search(r"`([A-Z2-7 ]{32,})`", shown)
        assert key is not None and "█" in shown  # the key to type, and the QR code drawn as text
        seed = key.group(1).replace(" ", "")
        # Kept nowhere in Slack: no DM, no message, no file; the key in no other call.
        assert fake_slack.calls_to("conversations.open") == []
        assert fake_slack.calls_to("chat.postMessage") == []
        assert fake_slack.calls_to("files.getUploadURLExternal") == [] and fake_slack.files == {}
        carrying = [
            call.method
            for call in fake_slack.calls
            if key.group(1) in strings_of(call.params) or seed in strings_of(call.params)
        ]
        assert carrying == ["views.open"]
        wrong = await interact(url, view_submission_payload(ENROLL_VIEW, code_values("000000")))
        assert wrong.json()["response_action"] == "errors"
        assert not (await runtime.mfa.status(USER)).confirmed
        right = await interact(url, view_submission_payload(ENROLL_VIEW, code_values(pyotp.TOTP(seed).now())))
        assert right.json()["response_action"] == "update"
        assert seed not in right.text  # the seed leaves the screen with the outcome
        assert (await runtime.mfa.status(USER)).confirmed


async def test_without_a_modal_the_enrollment_is_ephemeral(fake_slack: FakeSlack) -> None:
    dsn = await recreate_database("chatops_test_gate_slack")
    fake_slack.fail("views.open", "expired_trigger_id")
    async with running_bot(fake_slack, state_database_url=dsn, secret_key=SECRET_KEY) as (url, _):
        await post_command(url, "/mfa", "enroll")
        told = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
    assert told.params["user"] == USER and "Key (type it by hand" in block_text(told.params["blocks"])
    assert fake_slack.calls_to("conversations.open") == [] and fake_slack.files == {}
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_an_enrollment_not_confirmed_in_time_expires(fake_slack: FakeSlack) -> None:
    dsn = await recreate_database("chatops_test_gate_slack")
    async with running_bot(fake_slack, state_database_url=dsn, secret_key=SECRET_KEY) as (_, runtime):
        answer = await runtime.mfa_command.run(USER, ["enroll"])
        assert answer.enrollment is not None
        later = datetime.now(UTC) + timedelta(minutes=11)
        late = await runtime.mfa_command.confirm(USER, code_at(answer.enrollment.secret, later), later)
    assert not late.ok and "not confirmed within 10 minutes" in late.text
    assert not (await runtime.mfa.status(USER)).enrolled


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_five_wrong_codes_lock_step_up_and_alert_the_channel(fake_slack: FakeSlack) -> None:
    async with gate_bot(fake_slack) as (url, runtime, _clock, _seeds):
        await post_command(url, "/drill", "1")
        plan_post = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        approval_id = plan_post.params["blocks"][-1]["elements"][0]["value"]
        # Five submissions of the modal (each its own interaction, as Slack sends them).
        wrong = totp_values("000000")
        answers = [
            (
                await interact(url, view_submission_payload(MFA_VIEW, wrong, private_metadata=approval_id))
            ).json()
            for _ in range(5)
        ]
        alert = await fake_slack.wait_for_call_async(
            "chat.postMessage",
            predicate=lambda call: "locked out" in str(call.params.get("text")),
            timeout=10,
        )
    assert all(answer["response_action"] == "errors" for answer in answers)
    assert "step-up locked until" in answers[-1]["errors"][TOTP_BLOCK]
    assert alert.params["channel"] == CHANNEL
    assert "<@U0ONCALL01> is locked out of MFA step-up after 5 wrong codes" in alert.params["text"]
    assert await drill_value(runtime.services) == 0


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_operators_can_be_a_slack_user_group(fake_slack: FakeSlack) -> None:
    fake_slack.set_usergroup("S0OPSTEAM", [USER])
    dsn = await recreate_database("chatops_test_gate_slack")
    async with running_bot(
        fake_slack, state_database_url=dsn, secret_key=SECRET_KEY, operators=["S0OPSTEAM"]
    ) as (
        url,
        runtime,
    ):
        assert await runtime.authorizer.allowed(USER, "operator")
        assert not await runtime.authorizer.allowed(OTHER, "operator")
        await post_command(url, "/drill", "1")  # USER is a member but not enrolled: the gate says so
        told = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
    assert "not enrolled in MFA" in told.params["text"]
    assert fake_slack.calls_to("usergroups.users.list")[0].params["usergroup"] == "S0OPSTEAM"


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_mfa_reset_needs_the_admins_own_code_and_tells_everyone(fake_slack: FakeSlack) -> None:
    fake_slack.add_user(USER, "oncall")
    fake_slack.add_user(OTHER, "other")
    async with gate_bot(fake_slack) as (url, runtime, _clock, seeds):
        # OTHER has a plan waiting for confirmation; it must not survive their reset.
        body, headers = signed_slash_command_request(
            SIGNING_SECRET, command="/drill", text="1", user_id=OTHER, channel_id=CHANNEL
        )
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(f"{url}/slack/events", content=body, headers=headers)
        plan = await fake_slack.wait_for_call_async("chat.postMessage", timeout=10)
        # Not an administrator: refused. An administrator resetting themselves: refused.
        body, headers = signed_slash_command_request(
            SIGNING_SECRET, command="/mfa", text=f"reset <@{USER}|oncall>", user_id=OTHER, channel_id=CHANNEL
        )
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(f"{url}/slack/events", content=body, headers=headers)
        refused = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        assert "only MFA administrators" in refused.params["text"]
        fake_slack.reset()
        await post_command(url, "/mfa", "reset @oncall")
        itself = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        assert "nobody resets their own MFA" in itself.params["text"]
        # `@other` as Slack sends it (should_escape: false): found by name, then the admin's own code.
        fake_slack.reset()
        await post_command(url, "/mfa", "reset @other")
        opened = await fake_slack.wait_for_call_async("views.open", timeout=10)
        modal = opened.params["view"]
        assert modal["callback_id"] == RESET_VIEW and f"<@{OTHER}>" in block_text(modal["blocks"])
        metadata = modal["private_metadata"]
        wrong = await interact(
            url, view_submission_payload(RESET_VIEW, code_values("000000"), private_metadata=metadata)
        )
        assert wrong.json()["response_action"] == "errors"
        assert (await runtime.mfa.status(OTHER)).confirmed
        code = pyotp.TOTP(seeds[USER]).now()
        done = await interact(
            url, view_submission_payload(RESET_VIEW, code_values(code), private_metadata=metadata)
        )
        assert done.json()["response_action"] == "update"
        told = await fake_slack.wait_for_call_async(
            "chat.postMessage", predicate=lambda call: str(call.params["channel"]).startswith("D"), timeout=10
        )
        said = await fake_slack.wait_for_call_async(
            "chat.postMessage", predicate=lambda call: call.params["channel"] == CHANNEL, timeout=10
        )
        cancelled = await fake_slack.wait_for_call_async(
            "chat.update", predicate=lambda call: call.params["ts"] == plan.response["ts"], timeout=10
        )
        async with runtime.services.state_db.connection() as conn:
            statuses = [row["status"] for row in await conn.fetch("SELECT status FROM approvals")]
            trail = [
                (row["actor"], row["action"], row["decision"], row["outcome"])
                for row in await conn.fetch(
                    "SELECT actor, action, decision, outcome FROM audit_trail WHERE action IN"
                    " ('MFA_RESET', 'drill') AND decision IN ('refused', 'done', 'cancelled') ORDER BY id"
                )
            ]
    assert not (await runtime.mfa.status(OTHER)).enrolled
    assert "Your MFA enrollment was reset by <@U0ONCALL01>" in told.params["text"]
    assert f"reset the MFA enrollment of <@{OTHER}>; 1 plan(s) of theirs cancelled" in said.params["text"]
    assert "Cancelled" in block_text(cancelled.params["blocks"])
    assert statuses == ["cancelled"]
    assert trail == [
        (OTHER, "MFA_RESET", "refused", "not_admin"),
        (USER, "MFA_RESET", "refused", "self_reset"),
        (USER, "MFA_RESET", "refused", "step_up_failed"),
        (USER, "drill", "cancelled", "requester_reset"),
        (USER, "MFA_RESET", "done", None),
    ]
