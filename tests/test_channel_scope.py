"""From Slack an incident answers only in its own channel, or to a member of it (real PostgreSQL).

INC-1 is declared in a private channel. Someone outside it, in another channel, names it with
`inc=1` (or `channel=`), `/rca 1` or a button: refused, and nothing is read out or changed. A member
of the private channel is served from anywhere (Slack's conversations.members says who is in it,
answered by the fake from its own state). The terminal names its channel and works as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.invocation import Invocation
from bot.render.incident import ASK_NOTE_ACTION
from bot.render.rca import FILE_ACTION
from bot.runners import backup as backup_runner
from bot.runners import incident as incident_runner
from bot.runners import rca as rca_runner
from bot.runners import restore as restore_runner
from bot.slack import membership
from commands import incident as incident_command
from commands.base import UsageError
from tests.conftest import BOT_TOKEN, recreate_database
from tests.fakes import FakeSlack
from tests.fakes.github import TOKEN, FakeGitHub
from tests.incident_helpers import CHANNEL, OTHER_USER, USER, Bot, block_text
from tests.test_slack_app import running_bot

STATE_DB = "chatops_test_channel_scope"
PRIVATE = "G0SECRET01"  # INC-1's channel: private, the bot is in it
MEMBER = "U0MEMBER01"  # in PRIVATE, acting from CHANNEL
OUTSIDER = OTHER_USER  # not in PRIVATE
TITLE = "Card data exposed"
REFUSED = "INC-1 belongs to another channel; run this there"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        assert fake.violations == [], fake.violations


@asynccontextmanager
async def scoped_bot(fake_slack: FakeSlack, github: FakeGitHub | None = None) -> AsyncIterator[Bot]:
    """Serve the bot with its own state database; INC-1 declared by USER in the private channel."""
    dsn = await recreate_database(STATE_DB)
    settings: dict[str, Any] = {"state_database_url": dsn, "incident_channel": CHANNEL}
    if github is not None:
        settings |= {"github_token": TOKEN, "github_repo": github.repo, "github_api_url": github.url}
    fake_slack.add_channel(PRIVATE, "sec-incident", is_private=True)
    fake_slack.set_channel_members(PRIVATE, [USER, MEMBER])
    async with running_bot(fake_slack, **settings) as (url, runtime):
        bot = Bot(url, runtime, fake_slack)
        answer = await bot.answer(await bot.command("/incident", f"declare {TITLE} sev=P2", channel=PRIVATE))
        assert "Declared INC-1" in answer
        yield bot


async def state(bot: Bot) -> tuple[Any, ...]:
    """What a refused command must leave as it was: the record, its timeline, its RCA draft."""
    incident = await bot.store.get(1)
    assert incident is not None
    events = [(event.kind, event.text) for event in await bot.store.events(1)]
    draft = await bot.store.draft(1)
    async with bot.runtime.services.state_db.connection() as conn:
        count = await conn.fetchval("SELECT count(*) FROM incidents")
    return incident.model_dump(), events, draft.model_dump() if draft is not None else None, count


def mark(fake_slack: FakeSlack) -> tuple[int, int]:
    """Where the Slack calls and response_url posts are now."""
    return len(fake_slack.calls), len(fake_slack.response_posts)


def said_after(fake_slack: FakeSlack, since: tuple[int, int], text: str) -> list[str]:
    """Every Slack call and response_url post since the mark that carries `text`."""
    calls, posts = since
    found = [
        json.dumps(call.params, default=str) for call in fake_slack.calls[calls:] if text in str(call.params)
    ]
    return found + [
        json.dumps(post.body) for post in fake_slack.response_posts[posts:] if text in str(post.body)
    ]


async def refusal(fake_slack: FakeSlack, user: str, text: str = REFUSED) -> Any:
    return await fake_slack.wait_for_call_async(
        "chat.postEphemeral",
        lambda call: call.params["user"] == user and text in call.params["text"],
        timeout=10,
    )


# --- refused outside the incident's channel ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inc=1 timeline", REFUSED),
        ("timeline inc=1", REFUSED),
        ("inc=1 contacts", REFUSED),
        ("inc=1 update card numbers are in the logs", REFUSED),
        ("inc=1 note nothing to see", REFUSED),
        ("inc=1 sev P4", REFUSED),
        ("sev P4 inc=1", REFUSED),
        (f"inc=1 commander <@{OUTSIDER}>", REFUSED),
        ("inc=1 resolve false alarm", REFUSED),
        (f"channel={PRIVATE} note nothing to see", f"channel={PRIVATE} is another channel; run this there"),
        (f"channel={PRIVATE} timeline", f"channel={PRIVATE} is another channel; run this there"),
        (f"channel={PRIVATE} declare Decoy", f"channel={PRIVATE} is another channel; run this there"),
    ],
)
@pytest.mark.usefixtures("postgres")
async def test_another_channels_incident_is_refused_and_left_alone(
    fake_slack: FakeSlack, text: str, message: str
) -> None:
    async with scoped_bot(fake_slack) as bot:
        before, start = await state(bot), mark(fake_slack)
        await bot.command("/incident", text, user=OUTSIDER, channel=CHANNEL)
        answer = await refusal(fake_slack, OUTSIDER, message)
        after = await state(bot)
    assert answer.params["channel"] == CHANNEL
    assert after == before  # the record, its timeline, no draft, no other incident declared
    # Nothing of INC-1 reached the outsider or a channel: no title, no timeline, no header edit.
    assert said_after(fake_slack, start, TITLE) == [] and len(fake_slack.response_posts) == start[1]
    assert [call.method for call in fake_slack.calls[start[0] :]] in (
        ["chat.postEphemeral"],
        ["conversations.members", "chat.postEphemeral"],
    )


@pytest.mark.parametrize("text", ["1", "1 file", "1 --preview", "INC-1 lang=pt"])
@pytest.mark.usefixtures("postgres")
async def test_rca_of_another_channels_incident_is_refused(
    fake_slack: FakeSlack, github: FakeGitHub, text: str
) -> None:
    async with scoped_bot(fake_slack, github) as bot:
        before, start = await state(bot), mark(fake_slack)
        await bot.command("/rca", text, user=OUTSIDER, channel=CHANNEL)
        await refusal(fake_slack, OUTSIDER)
        after = await state(bot)
    assert after == before and after[2] is None  # no draft made, none filed
    assert [call.method for call in fake_slack.calls[start[0] :]] == [
        "conversations.members",
        "chat.postEphemeral",
    ]
    assert said_after(fake_slack, start, TITLE) == []
    assert github.issues == {}


@pytest.mark.usefixtures("postgres")
async def test_the_file_button_from_another_channel_files_only_for_a_member(
    fake_slack: FakeSlack, github: FakeGitHub
) -> None:
    async with scoped_bot(fake_slack, github) as bot:
        await bot.answer(await bot.command("/rca", "", channel=PRIVATE))  # the draft, previewed in PRIVATE
        before = await state(bot)
        await bot.click(FILE_ACTION, "1", user=OUTSIDER, channel=CHANNEL)
        await refusal(fake_slack, OUTSIDER)
        after_outsider, issues_after_outsider = await state(bot), dict(github.issues)
        await bot.click(FILE_ACTION, "1", user=MEMBER, channel=CHANNEL)
        filed = await fake_slack.wait_for_call_async(
            "chat.postEphemeral", lambda call: call.params["user"] == MEMBER, timeout=10
        )
    assert after_outsider == before and issues_after_outsider == {}
    assert "Filed as" in filed.params["text"] and list(github.issues) == [1]


@pytest.mark.usefixtures("postgres")
async def test_a_forged_same_incident_button_cannot_note_another_channels_incident(
    fake_slack: FakeSlack,
) -> None:
    async with scoped_bot(fake_slack) as bot:
        before = await state(bot)
        value = json.dumps({"incident": 1, "text": "planted"})
        await bot.click(ASK_NOTE_ACTION, value, user=OUTSIDER, channel=CHANNEL)
        await refusal(fake_slack, OUTSIDER)
        after = await state(bot)
    assert after == before


# --- served in the channel, to its members, and at the terminal -------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_a_member_of_the_incidents_channel_is_served_from_elsewhere(fake_slack: FakeSlack) -> None:
    async with scoped_bot(fake_slack) as bot:
        timeline = await bot.answer(
            await bot.command("/incident", "timeline inc=1", user=MEMBER, channel=CHANNEL)
        )
        noted = await bot.answer(
            await bot.command("/incident", "inc=1 note seen from #general", user=MEMBER, channel=CHANNEL)
        )
        asked = fake_slack.calls_to("conversations.members")
        events = [event.text for event in await bot.store.events(1)]
    assert TITLE in timeline and "Noted in INC-1" in noted
    assert events[-1] == "seen from #general"
    assert asked and {call.params["channel"] for call in asked} == {PRIVATE}


@pytest.mark.usefixtures("postgres")
async def test_in_its_own_channel_nobody_is_asked_about_membership(fake_slack: FakeSlack) -> None:
    async with scoped_bot(fake_slack) as bot:
        # OUTSIDER is not listed as a member: in the channel itself that is not asked.
        noted = await bot.answer(
            await bot.command("/incident", "inc=1 note in place", user=OUTSIDER, channel=PRIVATE)
        )
        rca = await bot.answer(await bot.command("/rca", "1", channel=PRIVATE))
    assert "Noted in INC-1" in noted and "RCA draft for INC-1" in rca
    assert fake_slack.calls_to("conversations.members") == []


@pytest.mark.usefixtures("postgres")
async def test_membership_slack_cannot_confirm_is_refused(fake_slack: FakeSlack) -> None:
    async with scoped_bot(fake_slack) as bot:
        fake_slack.set_membership(PRIVATE, False)  # the bot left: Slack no longer lists its members
        await bot.command("/incident", "inc=1 timeline", user=MEMBER, channel=CHANNEL)
        await refusal(fake_slack, MEMBER)
        [asked] = fake_slack.calls_to("conversations.members")
    assert asked.response is not None and asked.response["error"] == "channel_not_found"


@pytest.mark.usefixtures("postgres")
async def test_the_terminal_keeps_its_number_and_channel(fake_slack: FakeSlack) -> None:
    async with scoped_bot(fake_slack) as bot:
        services = bot.runtime.services
        terminal = Invocation(request_id="terminal", source="cli", channel_id=None)
        noted = await incident_runner.run(services, ["inc=1", "note", "from", "the", "terminal"], terminal)
        by_channel = await incident_runner.run(services, [f"channel={PRIVATE}", "timeline"], terminal)
        draft = await rca_runner.run(services, ["1", "--preview"], terminal)
    assert noted.outcome == "noted" and noted.incident is not None and noted.incident.id == 1
    assert by_channel.incident is not None and by_channel.incident.id == 1
    assert draft.incident.id == 1 and draft.preview_only
    assert fake_slack.calls_to("conversations.members") == []


# --- membership, as Slack pages it ------------------------------------------------------------------


async def test_membership_is_read_page_by_page_and_a_huge_channel_is_refused(
    fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slack.add_channel(PRIVATE, "sec-incident", is_private=True)
    fake_slack.set_channel_members(PRIVATE, [f"U{index:09d}" for index in range(2500)] + [MEMBER])
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    assert await membership.is_member(client, PRIVATE, MEMBER)
    assert len(fake_slack.calls_to("conversations.members")) == 3  # 1000 + 1000 + 501
    assert not await membership.is_member(client, PRIVATE, OUTSIDER)
    monkeypatch.setattr(membership, "MAX_PAGES", 2)
    assert not await membership.is_member(client, PRIVATE, MEMBER)  # past what the bot reads: refused
    assert not await membership.is_member(None, PRIVATE, MEMBER)
    assert not await membership.is_member(client, PRIVATE, None)


async def test_the_fake_lists_members_as_slack_does() -> None:
    with FakeSlack(tokens={BOT_TOKEN}, scopes={"channels:read", "groups:read", "groups:write"}) as fake:
        fake.add_channel("C0PUBLIC01", "general", is_member=False)
        fake.add_channel(PRIVATE, "sec-incident", is_private=True, is_member=False)
        fake.set_channel_members("C0PUBLIC01", [USER])
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.url)
        # A public channel's members are listed to an app that is not in it; a private one's are not.
        assert (await client.conversations_members(channel="C0PUBLIC01"))["members"] == [USER]
        with pytest.raises(SlackApiError, match="channel_not_found"):
            await client.conversations_members(channel=PRIVATE)
        fake.set_membership(PRIVATE, True)
        await client.conversations_invite(channel=PRIVATE, users=MEMBER)  # invited people are members
        answer = await client.conversations_members(channel=PRIVATE)
        with pytest.raises(SlackApiError, match="invalid_cursor"):
            await client.conversations_members(channel=PRIVATE, cursor="not-a-cursor")
        # The app's own manifest has groups:read and channels:read, which the bot relies on.
        without = FakeSlack(tokens={BOT_TOKEN}, scopes={"chat:write"}).start()
        try:
            without.add_channel(PRIVATE, "sec-incident", is_private=True)
            with pytest.raises(SlackApiError, match="missing_scope"):
                await AsyncWebClient(token=BOT_TOKEN, base_url=without.url).conversations_members(
                    channel=PRIVATE
                )
        finally:
            without.stop()
        assert fake.violations == [] and without.violations == []
    assert answer["members"] == [fake.bot_user_id, MEMBER]
    assert answer["response_metadata"] == {"next_cursor": ""}


# --- roles from the parsed arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("runner", "text", "role"),
    [
        (incident_runner, "inc=3 timeline", "viewer"),
        (incident_runner, "timeline inc=3", "viewer"),
        (incident_runner, "contacts channel=C0ABC123", "viewer"),
        (incident_runner, "inc=3 note x", "responder"),
        (incident_runner, "sev P1 inc=3", "responder"),
        (incident_runner, "update timeline", "responder"),  # free text that reads like an action
        (backup_runner, "prune", "operator"),
        (backup_runner, "keep-days=1 prune", "operator"),
        (backup_runner, "--keep-days 1 prune", "operator"),
        (backup_runner, "--dry-run prune", "operator"),
        (backup_runner, "db", "responder"),
        (backup_runner, "type=db", "responder"),
        (restore_runner, "list", "viewer"),
        (restore_runner, "verify 2026-11-20_02-00-00", "responder"),
        (restore_runner, "2026-11-20_02-00-00 type=db", "operator"),
        (restore_runner, "type=db 2026-11-20_02-00-00", "operator"),
    ],
)
def test_roles_come_from_the_parsed_arguments(runner: Any, text: str, role: str) -> None:
    tokens = incident_runner.slack_text(text) if runner is incident_runner else text.split()
    assert runner.required_role(tokens) == role


def test_text_the_grammar_refuses_has_no_role() -> None:
    with pytest.raises(UsageError):
        backup_runner.required_role(["keep-days=1", "prune", "everything"])
    with pytest.raises(UsageError):
        incident_runner.required_role(["INC=3 timeline"])


@pytest.mark.usefixtures("postgres")
async def test_a_prune_with_options_first_is_refused_to_a_responder(fake_slack: FakeSlack) -> None:
    dsn = await recreate_database(STATE_DB)
    async with running_bot(
        fake_slack, state_database_url=dsn, responders=[USER], operators=["U0OPERATOR"]
    ) as (
        url,
        runtime,
    ):
        bot = Bot(url, runtime, fake_slack)
        await bot.command("/backup", "keep-days=1 prune")
        answer = await refusal(fake_slack, USER, "you are not allowed to run /backup")
        async with runtime.services.state_db.connection() as conn:
            approvals = await conn.fetchval("SELECT count(*) FROM approvals")
    assert approvals == 0 and "Confirm" not in block_text(answer.params.get("blocks") or [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeline inc=3", {"action": "timeline", "incident_id": 3}),
        ("contacts channel=C0ABC123", {"action": "contacts", "channel_id": "C0ABC123"}),
        ("sev P1 inc=#3", {"action": "sev", "severity": "P1", "incident_id": 3}),
        (
            "commander <@U0ABCDEF1> inc=INC-3",
            {"action": "commander", "text": "<@U0ABCDEF1>", "incident_id": 3},
        ),
        ("inc=3 timeline inc=3", {"action": "timeline", "incident_id": 3}),
        # An option of the action counts wherever it stands, in free text too; quoted, it is text.
        ("update inc=3 rolling back", {"action": "update", "text": "rolling back", "incident_id": 3}),
        ("resolve rolled back inc=3", {"action": "resolve", "text": "rolled back", "incident_id": 3}),
        ('update "inc=3"', {"action": "update", "text": "inc=3", "incident_id": None}),
    ],
)
def test_options_may_follow_an_action_without_free_text(text: str, expected: dict[str, Any]) -> None:
    args = incident_command.parse(incident_runner.slack_text(text))
    assert {key: getattr(args, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inc=3 timeline inc=4", "give inc= once"),
        ("channel=C0ABC123 contacts channel=C0XYZ789", "give channel= once"),
        ("timeline channel=general", "is not a Slack channel id"),
        ("timeline now", "timeline takes no arguments"),
    ],
)
def test_options_given_twice_or_malformed_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        incident_command.parse(incident_runner.slack_text(text))
