"""Slack's limits: long outputs split instead of rejected, posts paced, 429 retried after Retry-After."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from slack_sdk.http_retry import builtin_async_handlers
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_api import install_rate_limit_retry
from bot.observability import BotMetrics
from bot.registry import CommandSpec
from bot.render.common import Message, SlackReply, section
from bot.slack.posting import ChannelPacer, ResponseUrl, ResponseUrlSpent, split_message
from bot.slack.reply import post_reply
from commands.base import CommandResult
from tests.conftest import BOT_TOKEN
from tests.fakes import FakeSlack, validate_blocks


def test_a_huge_report_is_split_into_valid_messages_and_loses_nothing() -> None:
    lines = [f"line {index:04d} " + "x" * 60 for index in range(600)]
    blocks = [section("\n".join(lines[start : start + 10])) for start in range(0, 600, 10)]
    # One section far over 3,000 characters, as a renderer may build it without section()'s cut.
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "```" + "\n".join(lines) + "```"}})
    messages = split_message(Message(text="report", blocks=blocks))
    assert len(messages) > 1
    for message in messages:
        assert validate_blocks(message.blocks) == []
        assert len(message.blocks) <= 50
    text = "\n".join(block["text"]["text"] for message in messages for block in message.blocks)
    for line in lines:
        assert text.count(line) == 2  # once in the ten-line sections, once in the code block
    code_parts = [
        block["text"]["text"]
        for message in messages
        for block in message.blocks
        if "```" in block["text"]["text"]
    ]
    assert all(part.startswith("```") and part.endswith("```") for part in code_parts)


def test_a_short_message_is_left_alone() -> None:
    message = Message(text="ok", blocks=[section("all good")])
    assert split_message(message) == [message]


class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_posts_to_one_channel_are_paced_after_a_short_burst() -> None:
    """The pacer's real figures: benchmarks/ack_bench.py."""
    fake = FakeTime()
    # A quarter of a second: every time below is exact in binary, so no rounding blurs a turn.
    pacer = ChannelPacer(interval=0.25, burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        await pacer.wait_turn("C1")
    assert fake.sleeps == []  # the burst goes out at once
    for _ in range(3):
        await pacer.wait_turn("C1")
    # From the fourth post on, each one waits an interval for its turn.
    assert fake.sleeps == [0.25, 0.25, 0.25]
    await pacer.wait_turn("C2")  # another channel has its own budget
    assert len(fake.sleeps) == 3
    fake.now += 0.5  # two quiet intervals give two posts back, not more
    await pacer.wait_turn("C1")
    await pacer.wait_turn("C1")
    assert len(fake.sleeps) == 3
    await pacer.wait_turn("C1")
    assert fake.sleeps[3:] == [0.25]


async def test_a_429_is_retried_after_retry_after_and_counted(
    fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How long the retry takes for real: benchmarks/ack_bench.py."""
    waits: list[tuple[float, list[int | None]]] = []

    async def wait(seconds: float) -> None:
        # What the fake had answered when the client decided to wait, and for how long.
        waits.append((seconds, [call.status for call in fake_slack.calls_to("chat.postMessage")]))

    # The wait slack_sdk's rate-limit handler makes before it tries again, without the waiting.
    monkeypatch.setattr(builtin_async_handlers, "asyncio", SimpleNamespace(sleep=wait))
    metrics = BotMetrics()
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    install_rate_limit_retry(client, lambda method: metrics.slack_rate_limited.labels(method).inc())
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=30)
    answer = await client.chat_postMessage(channel="C0INCIDENT", text="after the limit")
    assert answer["ok"] is True
    # One wait, of Slack's Retry-After (plus at most a second of jitter), after the 429 and before
    # the second call, which went through.
    [(asked_for, answered_then)] = waits
    assert 30 <= asked_for < 31
    assert answered_then == [429]
    assert [call.status for call in fake_slack.calls_to("chat.postMessage")] == [429, 200]
    assert metrics.slack_rate_limited.labels("chat.postMessage")._value.get() == 1


async def test_a_response_url_is_used_five_times_at_most_and_for_thirty_minutes() -> None:
    sent: list[dict[str, object]] = []

    async def respond(**message: object) -> None:
        sent.append(message)

    now = [0.0]
    url = ResponseUrl(respond, clock=lambda: now[0])
    for index in range(5):
        await url(text=f"answer {index}")
    with pytest.raises(ResponseUrlSpent):
        await url(text="a sixth")
    assert [item["text"] for item in sent] == [f"answer {index}" for index in range(5)]

    fresh = ResponseUrl(respond, clock=lambda: now[0])
    now[0] += 30 * 60 + 1
    with pytest.raises(ResponseUrlSpent):
        await fresh(text="too late")
    assert len(sent) == 5


async def test_an_answer_for_the_caller_only_falls_back_to_the_web_api_once_the_url_is_spent(
    fake_slack: FakeSlack,
) -> None:
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    now = [0.0]

    async def respond(**message: object) -> None:
        raise AssertionError("a spent response_url must not be called")

    spent = ResponseUrl(respond, clock=lambda: now[0])
    now[0] += 31 * 60
    spec = CommandSpec(
        name="whoami",
        summary="",
        usage="",
        run=lambda services, tokens, invocation: None,  # type: ignore[arg-type, return-value]
        slack=lambda result: SlackReply(main=Message(text="only for you", blocks=[]), ephemeral=True),
        terminal=lambda result, console: None,
    )
    await post_reply(
        client, spent, "C0INCIDENT", spec.name, spec.slack(CommandResult()), None, user="U0ONCALL01"
    )  # type: ignore[arg-type]
    [call] = fake_slack.calls_to("chat.postEphemeral")
    assert call.params["user"] == "U0ONCALL01" and call.params["text"] == "only for you"
