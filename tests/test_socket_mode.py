"""Socket Mode end to end: envelopes over the websocket the bot dials, each request run once.

The bot is built as `chatops serve` builds it in Socket Mode (Runtime, the Bolt app,
OnceSocketModeHandler with a ReplayGuard over the state database) and connects to a local Socket
Mode server (tests/fakes/socket_mode.py) attached to the fake Slack Web API. What "ran" means is
seen from the fake: an answer posted, a modal opened, a plan message updated. Two replicas are two
such bots sharing one state database, as two `chatops serve` processes would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from bot.gate.mfa import code_at
from bot.listeners.app import build_slack_app
from bot.render.gate import CONFIRM_ACTION, MFA_VIEW, TOTP_BLOCK
from bot.runtime import Runtime
from bot.state import migrate
from bot.web.replay import ReplayGuard
from bot.web.socket_mode import OnceSocketModeHandler
from tests.conftest import BOT_TOKEN, make_settings, recreate_database
from tests.fakes import FakeSlack, block_actions_payload, slash_command_form, view_submission_payload
from tests.fakes.socket_mode import FakeSocketMode
from tests.gate_helpers import (
    DRILL_KEY,
    SECRET_KEY,
    FrozenClock,
    drill_command,  # noqa: F401  (autouse fixture)
    drill_value,
)

# Every test keeps the bot's state (receipts, approvals, MFA) in the machine's PostgreSQL.
pytestmark = pytest.mark.usefixtures("postgres")

APP_TOKEN = "xapp-1-A0CHATOPS1-1-socketmodetest"
STATE_DB = "chatops_test_socket_mode"
USER = "U0ONCALL01"
OTHER = "U0OTHER001"
CHANNEL = "C0INCIDENT"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The fake Web API, taking the bot token and the app-level token.

    apps.connections.open is Tier 1 (one a minute, a small burst): replicas and reconnections
    open more than that here, so every limit is scaled up.
    """
    with FakeSlack(tokens={BOT_TOKEN, APP_TOKEN}, rate_scale=60) as fake:
        yield fake
        assert fake.violations == [], fake.violations


@dataclass
class Replica:
    """One running bot in Socket Mode."""

    runtime: Runtime
    handler: OnceSocketModeHandler

    def deduplicated(self) -> float:
        """Return how many envelopes it acknowledged without running (taken before)."""
        registry = self.runtime.services.metrics.registry
        value = registry.get_sample_value("chatops_requests_deduplicated_total", {"why": "redelivered"})
        return value or 0.0


@asynccontextmanager
async def replica(
    fake: FakeSlack, dsn: str, *, ping_interval: float = 10, **overrides: Any
) -> AsyncIterator[Replica]:
    """Run the bot in Socket Mode as `chatops serve` does, connected to the fake's Socket Mode server."""
    settings = make_settings(
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_api_url=fake.url,
        state_database_url=dsn,
        **overrides,
    )
    assert settings.socket_mode
    runtime = Runtime.build(settings)
    await migrate(runtime.services.state_db)
    assert runtime.slack_client is not None
    handler = OnceSocketModeHandler(
        build_slack_app(runtime, runtime.slack_client),
        APP_TOKEN,
        ReplayGuard(runtime.services.receipts_db),
        runtime.services.metrics,
        ping_interval=ping_interval,
    )
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        yield Replica(runtime, handler)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await runtime.in_flight.drain(timeout=10)
        await runtime.services.aclose()


def deliveries(socket: FakeSocketMode) -> int:
    """Return how many envelopes the fake delivered in all (redeliveries and resends included)."""
    return sum(len(envelope.deliveries) for envelope in socket.envelopes.values())


def answered(fake: FakeSlack) -> list[tuple[str, str]]:
    """Return every (user, text) the bot answered a caller with (ephemeral)."""
    return [
        (str(c.params.get("user")), str(c.params.get("text"))) for c in fake.calls_to("chat.postEphemeral")
    ]


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for `condition` to hold (polling), or fail naming `what`."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {timeout} s: {what}")


async def settle() -> None:
    """Give a request wrongly run a second time the time to show itself before the test looks."""
    await asyncio.sleep(1.5)


def mfa_status(user: str = USER) -> dict[str, str]:
    """A slash command anyone may run, answered to the caller only: `/mfa status`."""
    return slash_command_form("/mfa", "status", user_id=user, channel_id=CHANNEL)


# --- slash commands, buttons, the MFA modal -------------------------------------------------------


async def test_a_slash_command_is_acknowledged_then_answered_to_the_caller(slack: FakeSlack) -> None:
    dsn = await recreate_database(STATE_DB)
    with FakeSocketMode(slack) as socket:
        async with replica(slack, dsn):
            envelope = socket.send("slash_commands", mfa_status())
            ack = await socket.wait_for_ack_async(envelope)
            told = await slack.wait_for_call_async("chat.postEphemeral", timeout=15)
    # Acknowledged with nothing in it: the answer comes after, from the Web API.
    assert ack == {"envelope_id": envelope.envelope_id}
    assert envelope.accepts_response_payload
    assert told.params["user"] == USER and told.params["channel"] == CHANNEL
    assert "not enrolled" in told.params["text"]


async def test_a_button_click_is_acknowledged_then_answered_to_the_clicker(slack: FakeSlack) -> None:
    dsn = await recreate_database(STATE_DB)
    with FakeSocketMode(slack) as socket:
        async with replica(slack, dsn):
            click = socket.send(
                "interactive", block_actions_payload(CONFIRM_ACTION, "not-a-plan", channel_id=CHANNEL)
            )
            ack = await socket.wait_for_ack_async(click)
            told = await slack.wait_for_call_async("chat.postEphemeral", timeout=15)
    assert not click.accepts_response_payload  # a click's ack carries nothing, as Slack says
    assert ack == {"envelope_id": click.envelope_id}
    assert told.params["user"] == USER
    assert "that button does not belong to a plan" in told.params["text"]
    assert slack.calls_to("views.open") == []


@dataclass
class GateBot:
    """A replica with MFA configured, USER enrolled, and a frozen clock for TOTP codes."""

    bot: Replica
    clock: FrozenClock
    seed: str

    def code(self) -> str:
        return code_at(self.seed, self.clock.now)


@asynccontextmanager
async def gate_bot(fake: FakeSlack) -> AsyncIterator[GateBot]:
    dsn = await recreate_database(STATE_DB)
    async with replica(fake, dsn, secret_key=SECRET_KEY, operators=[USER, OTHER], mfa_admins=[USER]) as bot:
        clock = FrozenClock(now=datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
        bot.runtime.gate.clock = clock
        enrollment = await bot.runtime.mfa.enroll(USER)
        confirmed = await bot.runtime.mfa.verify(
            USER, code_at(enrollment.secret, clock.now), clock.now, confirming=True
        )
        assert confirmed.accepted
        clock.advance(30)
        await bot.runtime.services.redis.client.delete(DRILL_KEY)
        yield GateBot(bot, clock, enrollment.secret)


def totp(code: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {TOTP_BLOCK: {"value": {"type": "plain_text_input", "value": code}}}


async def propose_drill(slack: FakeSlack, socket: FakeSocketMode, amount: int) -> tuple[str, str]:
    """Send `/drill <amount>` over the socket; return the plan's approval id and message ts."""
    command = socket.send("slash_commands", slash_command_form("/drill", str(amount), channel_id=CHANNEL))
    await socket.wait_for_ack_async(command)
    plan = await slack.wait_for_call_async("chat.postMessage", timeout=15)
    [confirm, _cancel] = plan.params["blocks"][-1]["elements"]
    assert confirm["action_id"] == CONFIRM_ACTION and plan.response is not None
    return str(confirm["value"]), str(plan.response["ts"])


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_the_gate_over_the_socket_plan_confirm_modal_and_one_run(slack: FakeSlack) -> None:
    with FakeSocketMode(slack) as socket:
        async with gate_bot(slack) as gate:
            services = gate.bot.runtime.services
            approval_id, plan_ts = await propose_drill(slack, socket, 4)

            click = block_actions_payload(CONFIRM_ACTION, approval_id, message_ts=plan_ts, channel_id=CHANNEL)
            click_ack = await socket.wait_for_ack_async(socket.send("interactive", click))
            opened = await slack.wait_for_call_async("views.open", timeout=15)

            values = totp(gate.code())
            submission = view_submission_payload(MFA_VIEW, values, private_metadata=approval_id)
            submitted = socket.send("interactive", submission)
            submit_ack = await socket.wait_for_ack_async(submitted)
            final = await slack.wait_for_call_async(
                "chat.update",
                predicate=lambda call: "Succeeded" in str(call.params.get("blocks")),
                timeout=15,
            )
            ran = await drill_value(services)

            # Slack delivers the same submission again: acknowledged, not run again.
            updates = len(slack.calls_to("chat.update"))
            again = await socket.wait_for_ack_async(socket.resend(submitted))
            # A new submission of the plan already run: the gate answers in the modal, via the ack.
            late = socket.send(
                "interactive", view_submission_payload(MFA_VIEW, values, private_metadata=approval_id)
            )
            late_ack = await socket.wait_for_ack_async(late)
            await settle()
            after = await drill_value(services)

    assert "payload" not in click_ack  # nothing in a click's ack
    assert opened.params["trigger_id"] == click["trigger_id"]
    assert opened.params["view"]["callback_id"] == MFA_VIEW
    assert opened.params["view"]["private_metadata"] == approval_id
    assert submitted.accepts_response_payload
    assert "payload" not in submit_ack  # no errors: the modal closes
    assert final.params["ts"] == plan_ts and final.params["channel"] == CHANNEL
    assert "counter = 4" in str(final.params["blocks"])
    assert ran == 4 and after == 4
    assert "payload" not in again
    # Four requests (command, click, submission, late submission): every other delivery was only
    # acknowledged (the resent submission; and any envelope Slack sent again because an ack was slow).
    assert gate.bot.deduplicated() == deliveries(socket) - 4 >= 1
    assert late_ack["payload"]["response_action"] == "errors"
    assert "already" in late_ack["payload"]["errors"][TOTP_BLOCK]
    assert len(slack.calls_to("chat.update")) == updates  # nothing more shown: nothing more ran


@pytest.mark.usefixtures("redis")  # the drill's counter
async def test_a_wrong_code_comes_back_in_the_ack_and_nothing_runs(slack: FakeSlack) -> None:
    with FakeSocketMode(slack) as socket:
        async with gate_bot(slack) as gate:
            approval_id, _ = await propose_drill(slack, socket, 1)
            wrong = view_submission_payload(MFA_VIEW, totp("000000"), private_metadata=approval_id)
            ack = await socket.wait_for_ack_async(socket.send("interactive", wrong))
            await settle()
            value = await drill_value(gate.bot.runtime.services)
    assert ack["payload"] == {"response_action": "errors", "errors": {TOTP_BLOCK: "wrong or expired code"}}
    assert value == 0
    assert slack.calls_to("chat.update") == []


# --- two replicas -----------------------------------------------------------------------------------


async def test_two_replicas_share_the_envelopes_and_run_each_once(slack: FakeSlack) -> None:
    dsn = await recreate_database(STATE_DB)
    users = [f"U0CALLER{n:02d}" for n in range(6)]
    with FakeSocketMode(slack) as socket:
        async with replica(slack, dsn) as one, replica(slack, dsn) as two:
            await socket.wait_for_connections_async(2)
            envelopes = [socket.send("slash_commands", mfa_status(user)) for user in users]
            for envelope in envelopes:
                await socket.wait_for_ack_async(envelope)
            await until(lambda: len(answered(slack)) >= len(users), "an answer to every caller")
            await settle()
    assert sorted(user for user, _ in answered(slack)) == users
    assert {envelope.connections[0] for envelope in envelopes} == {1, 2}  # both replicas took some
    # Nothing delivered twice unless an ack was slow; whatever was, was only acknowledged.
    assert one.deduplicated() + two.deduplicated() == deliveries(socket) - len(users)


async def test_an_envelope_whose_ack_was_lost_is_only_acknowledged_by_the_other_replica(
    slack: FakeSlack,
) -> None:
    dsn = await recreate_database(STATE_DB)
    with FakeSocketMode(slack, ack_timeout=2.0) as socket:
        async with replica(slack, dsn) as one, replica(slack, dsn) as two:
            await socket.wait_for_connections_async(2)
            # The first ack never reaches Slack: it delivers the envelope again, to the other connection.
            envelope = socket.send("slash_commands", mfa_status(), lose_acks=1)
            ack = await socket.wait_for_ack_async(envelope, timeout=20)
            await slack.wait_for_call_async("chat.postEphemeral", timeout=15)
            await socket.wait_until_done_async(envelope)
            await settle()
    first, second = envelope.deliveries[0].connection, envelope.deliveries[1].connection
    assert first != second
    assert [number for number, _ in envelope.lost_acks] == [first]
    assert ack == {"envelope_id": envelope.envelope_id}
    if len(envelope.deliveries) == 2:  # (a third, were the second ack slow, goes back to the first)
        assert [number for number, _ in envelope.acks] == [second]
    assert len(answered(slack)) == 1
    # Whichever replica got it again acknowledged it without running it (and so on, were there more).
    assert one.deduplicated() + two.deduplicated() == len(envelope.deliveries) - 1 >= 1


async def test_deliveries_that_overlap_across_replicas_run_once(slack: FakeSlack) -> None:
    dsn = await recreate_database(STATE_DB)
    with FakeSocketMode(slack, max_retries=3) as socket:
        async with replica(slack, dsn) as one, replica(slack, dsn) as two:
            await socket.wait_for_connections_async(2)
            # Slack gives up waiting at once: the same envelope reaches both replicas before either acks.
            envelope = socket.send("slash_commands", mfa_status(), ack_timeout=0)
            await slack.wait_for_call_async("chat.postEphemeral", timeout=15)
            await socket.wait_until_done_async(envelope)
            await settle()
    assert len(envelope.deliveries) >= 2
    assert {delivery.connection for delivery in envelope.deliveries} == {1, 2}
    assert len(envelope.acks) == len(envelope.deliveries)  # every delivery acknowledged
    assert len(answered(slack)) == 1
    assert one.deduplicated() + two.deduplicated() == len(envelope.deliveries) - 1


# --- reconnection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("abruptly", [True, False], ids=["connection cut", "disconnect refresh_requested"])
async def test_the_bot_reconnects_and_keeps_what_it_acknowledged(slack: FakeSlack, abruptly: bool) -> None:
    dsn = await recreate_database(STATE_DB)
    third = "U0THIRD001"
    with FakeSocketMode(slack) as socket:
        # Pings every 2 s: a connection cut without a word is noticed within a few seconds.
        async with replica(slack, dsn, ping_interval=2) as bot:
            await socket.wait_for_connections_async(1)
            before = socket.send("slash_commands", mfa_status(USER))
            await socket.wait_for_ack_async(before)
            await slack.wait_for_call_async("chat.postEphemeral", timeout=15)

            socket.disconnect("refresh_requested", abruptly=abruptly)
            # Sent while the bot may be away: delivered once it is back (or again, if lost).
            meanwhile = socket.send("slash_commands", mfa_status(third))
            await socket.wait_for_connections_opened_async(2, timeout=30)
            await until(lambda: socket.open_connections == 1, "the old connection closed")
            # The acknowledged envelope, delivered again over the new connection: not run again.
            again = socket.resend(before)
            again_ack = await socket.wait_for_ack_async(again, timeout=15)
            after = socket.send("slash_commands", mfa_status(OTHER))
            await socket.wait_for_ack_async(after, timeout=15)
            await socket.wait_for_ack_async(meanwhile, timeout=30)
            await until(lambda: len(answered(slack)) >= 3, "answers to the three callers")
            await settle()
    # Every connection on a URL of its own, asked for anew with apps.connections.open.
    assert len(slack.calls_to("apps.connections.open")) == socket.connections_opened >= 2
    assert socket.refused_connections == 0
    assert again.connections[0] != before.connections[0]  # over the new connection
    assert again_ack == {"envelope_id": again.envelope_id}
    assert sorted(user for user, _ in answered(slack)) == sorted([USER, OTHER, third])  # each once
    # At least the redelivered one; the one sent meanwhile too, if an ack of it was lost in the drop.
    assert bot.deduplicated() >= 1


async def test_the_fake_refuses_a_websocket_url_it_did_not_hand_out(slack: FakeSlack) -> None:
    """As Slack's: a connection needs a URL from apps.connections.open (the fake's own check)."""
    with FakeSocketMode(slack) as socket:
        forged = socket.ws_url.split("?")[0] + "?ticket=forged"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(forged)
    assert refused.value.status == 401
    assert socket.refused_connections == 1 and socket.connections_opened == 0
