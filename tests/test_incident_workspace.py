"""An incident's workspace in Slack: its own channel, the people in it, its bookmarks, the link where it
was declared, the stakeholders' one announcement, roles, the tactical update form (real PostgreSQL,
Slack's fake checking every call against Slack's published description)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bot.render.incident_workspace import UPDATE_VIEW
from tests.conftest import SIGNING_SECRET
from tests.fakes import FakeSlack, SlackCall, signed_interaction_request, view_submission_payload
from tests.fakes.github import FakeGitHub
from tests.incident_helpers import (
    CHANNEL,
    OTHER_USER,
    USER,
    Bot,
    block_text,
    in_thread,
    incident_bot,
    is_header,
)

DATABASE = "chatops_test_incident_workspace"
STAKEHOLDERS = "C0STAKEHLD"
GROUP = "S0RESPOND1"
RESPONDERS = ["U0RESPOND1", "U0RESPOND2"]
RUNBOOK = "https://runbook.example/3dpot/operations"
NAME = "inc-1-checkout-returns-5xx"


def workspace(fake: FakeSlack) -> dict[str, Any]:
    """A workspace with the people and channels of these tests; the settings of a dedicated workspace."""
    fake.add_user(USER, "oncall")
    fake.add_user(OTHER_USER, "alice", real_name="Alice Example")
    for number, user in enumerate(RESPONDERS):
        fake.add_user(user, f"responder{number}")
    fake.set_usergroup(GROUP, RESPONDERS)
    fake.add_channel(CHANNEL, "ops")
    fake.add_channel(STAKEHOLDERS, "status")
    return {
        "database": DATABASE,
        "incident_workspace": "dedicated",
        "incident_responder_group": GROUP,
        "incident_stakeholder_channel": STAKEHOLDERS,
        "runbook_url": RUNBOOK,
    }


def posts_in(fake: FakeSlack, channel: str) -> list[SlackCall]:
    return [call for call in fake.calls_to("chat.postMessage") if call.params.get("channel") == channel]


def invited(fake: FakeSlack, channel: str) -> set[str]:
    return {
        user
        for call in fake.calls_to("conversations.invite")
        if call.params.get("channel") == channel and (call.response or {}).get("ok")
        for user in str(call.params["users"]).split(",")
    }


async def say(bot: Bot, text: str, user: str = USER, channel: str = CHANNEL) -> str:
    """Run `/incident <text>`; return what the caller was told (a confirmation, or an error)."""
    before = len(bot.slack.calls_to("chat.postEphemeral"))
    response_id = await bot.command("/incident", text, user=user, channel=channel)
    for _ in range(1000):
        if any(post.response_id == response_id for post in bot.slack.response_posts):
            return await bot.answer(response_id)
        errors = bot.slack.calls_to("chat.postEphemeral")[before:]
        if errors and errors[0].response is not None:
            return str(errors[0].params.get("text"))
        await asyncio.sleep(0.01)
    raise AssertionError(f"no answer to /incident {text}")


async def declare(bot: Bot, text: str = "Checkout returns 5xx sev=P1") -> str:
    return await say(bot, f"declare {text}")


# --- a channel of its own ---------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_a_declared_incident_gets_its_own_channel_people_bookmarks_and_a_link(
    fake_slack: FakeSlack,
) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        answer = await declare(bot)
        incident = await bot.store.get(1)
    created = fake_slack.calls_to("conversations.create")
    assert [call.params["name"] for call in created] == [NAME]
    assert incident is not None and incident.has_own_channel
    channel = incident.channel_id
    assert created[0].response is not None and created[0].response["channel"]["id"] == channel
    assert incident.origin_channel_id == CHANNEL and incident.channel_name == NAME
    assert f"in its own channel, <#{channel}>" in answer
    # The header is pinned there, its thread is the incident's.
    [header] = [call for call in posts_in(fake_slack, channel) if is_header(call)]
    assert (channel, header.response["ts"]) in fake_slack.pins  # type: ignore[index]
    assert incident.header_ts == header.response["ts"]  # type: ignore[index]
    # The declarer (its commander) and the responders' group are in it.
    assert invited(fake_slack, channel) == {USER, *RESPONDERS}
    # The runbook and the graphs of the window are bookmarked.
    marks = {mark["title"]: mark["link"] for mark in fake_slack.bookmarks[channel]}
    assert marks["Runbook"] == RUNBOOK
    [graphs] = [link for title, link in marks.items() if title.startswith("Graphs")]
    assert "g0.expr=" in graphs and "g1.expr=" in graphs and "end_input" not in graphs
    assert set(incident.bookmarks) == {"runbook", "graphs"}
    # Where it was declared: one message, the link.
    [link] = posts_in(fake_slack, CHANNEL)
    assert f"<#{channel}>" in block_text(link.params["blocks"]) and incident.origin_ts == link.response["ts"]  # type: ignore[index]
    # The stakeholders: one announcement.
    [announcement] = posts_in(fake_slack, STAKEHOLDERS)
    assert "INC-1 · P1 · Checkout returns 5xx" in block_text(announcement.params["blocks"])
    assert incident.announcement_ts == announcement.response["ts"]  # type: ignore[index]
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_the_life_of_an_incident_in_its_channel_and_for_its_stakeholders(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot)
        incident = await bot.store.get(1)
        assert incident is not None
        room = incident.channel_id
        for text in (
            "update rolled back to v2.0.5; error rate falling",
            "role comms @alice",
            "sev P2",
            "resolve rolled back to v2.0.5",
        ):
            answer = await say(bot, text, channel=room)
            assert ":white_check_mark:" in answer, (text, answer)
        resolved = await bot.store.get(1)
        timeline = await bot.store.events(1)
    assert resolved is not None and resolved.status == "resolved" and resolved.comms_lead == OTHER_USER
    # One announcement, edited in place at every change: latest summary, severity, roles, status.
    [announcement] = posts_in(fake_slack, STAKEHOLDERS)
    edits = [call for call in fake_slack.calls_to("chat.update") if call.params["channel"] == STAKEHOLDERS]
    assert len(edits) == 4 and all(call.params["ts"] == announcement.response["ts"] for call in edits)  # type: ignore[index]
    shown = block_text(edits[-1].params["blocks"])
    assert "Resolved after" in shown and "INC-1 · P2" in shown and f"<@{OTHER_USER}>" in shown
    assert "rolled back to v2.0.5; error rate falling" in block_text(edits[0].params["blocks"])
    # The communications lead was invited, and is in the header and the timeline.
    assert OTHER_USER in invited(fake_slack, room)
    header = next(item for item in fake_slack.messages(room) if item["ts"] == resolved.header_ts)
    assert f"*Communications lead*\n<@{OTHER_USER}>" in block_text(header["blocks"])
    assert [event.kind for event in timeline] == ["declared", "update", "role", "severity", "resolved"]
    assert timeline[2].details == {"from": None, "to": OTHER_USER, "role": "comms"}
    # Resolved: the summary in the incident's thread and where it was declared (under the link).
    posted = await bot.posted(in_thread(str(resolved.origin_ts)))
    assert posted.params["channel"] == CHANNEL and posted.params["reply_broadcast"] in (True, "true", "1")
    assert "resolved after" in block_text(posted.params["blocks"]) and "rolled back to v2.0.5" in block_text(
        posted.params["blocks"]
    )
    assert any("Resolved after" in str(call.params.get("text")) for call in posts_in(fake_slack, room))
    # The graphs bookmark now shows the window itself; nothing was archived.
    [graphs] = [mark for mark in fake_slack.bookmarks[room] if mark["title"].startswith("Graphs")]
    assert "end_input" in graphs["link"] and "of the window" in graphs["title"]
    assert fake_slack.calls_to("conversations.archive") == []
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_the_channel_it_was_declared_in_points_to_its_own(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot)
        answer = await say(bot, "note where is everyone")
        again = await say(bot, "declare Checkout still 5xx", user=OTHER_USER)
        noted = await say(bot, "inc=1 note from ops")
        events = await bot.store.events(1)
    assert f"INC-1 was declared here and lives in its own channel, #{NAME}" in answer
    assert "is already open here" in again  # a second declare from the same channel is asked about
    assert "Noted" in noted and [event.text for event in events][-1] == "from ops"


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        ("name_taken", f"could not open #{NAME}: a channel with that name already exists (name_taken)"),
        ("restricted_action", "this workspace does not let the bot create channels (restricted_action)"),
    ],
)
@pytest.mark.usefixtures("postgres")
async def test_a_channel_slack_refuses_leaves_the_incident_declared_where_it_was(
    fake_slack: FakeSlack, refusal: str, said: str
) -> None:
    if refusal == "name_taken":
        fake_slack.add_channel("C0TAKEN001", NAME)  # made by hand, or by another environment's bot
    else:
        fake_slack.fail("conversations.create", refusal)
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        answer = await declare(bot)
        incident = await bot.store.get(1)
    assert said in answer and "INC-1 is declared here instead" in answer
    assert incident is not None and incident.channel_id == CHANNEL and not incident.has_own_channel
    [header] = [call for call in posts_in(fake_slack, CHANNEL) if is_header(call)]
    assert (CHANNEL, header.response["ts"]) in fake_slack.pins  # type: ignore[index]
    assert fake_slack.calls_to("bookmarks.add") == [] and fake_slack.calls_to("conversations.invite") == []
    assert len(posts_in(fake_slack, STAKEHOLDERS)) == 1  # the stakeholders hear of it all the same


@pytest.mark.usefixtures("postgres")
async def test_in_place_by_setting_or_by_option(fake_slack: FakeSlack) -> None:
    settings = workspace(fake_slack) | {"incident_workspace": "in-place"}
    async with incident_bot(fake_slack, **settings) as bot:
        await declare(bot, "Disk full sev=P3")
        await say(bot, "resolve freed space")
        await say(bot, "declare place=dedicated Queue backlog")
        first, second = await bot.store.get(1), await bot.store.get(2)
    assert first is not None and first.channel_id == CHANNEL
    assert second is not None and second.channel_name == "inc-2-queue-backlog"
    assert [call.params["name"] for call in fake_slack.calls_to("conversations.create")] == [
        "inc-2-queue-backlog"
    ]


@pytest.mark.usefixtures("postgres")
async def test_people_who_cannot_be_invited_do_not_stop_the_others(fake_slack: FakeSlack) -> None:
    # One responder of the group was deactivated: Slack refuses the whole invite, then that one alone.
    settings = workspace(fake_slack)

    def refuse_one(call: SlackCall) -> dict[str, Any]:
        users = str(call.params["users"]).split(",")
        if RESPONDERS[1] in users:
            return {"ok": False, "error": "cant_invite"}
        return {"ok": True, "channel": {"id": call.params["channel"]}}

    fake_slack.respond_with("conversations.invite", refuse_one)
    async with incident_bot(fake_slack, **settings) as bot:
        answer = await declare(bot)
    tried = [str(call.params["users"]) for call in fake_slack.calls_to("conversations.invite")]
    assert tried == [f"{USER},{RESPONDERS[0]},{RESPONDERS[1]}", USER, RESPONDERS[0], RESPONDERS[1]]
    assert f"could not invite {RESPONDERS[1]} (cant_invite)" in answer


# --- roles and people --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("role boss @alice", "unknown role `boss`; the roles are commander, comms, scribe"),
        ("role comms", "role comms takes one person"),
        ("commander @nobody", "there is no Slack user called @nobody"),
        ("role scribe U0NOBODY99", "there is no Slack user U0NOBODY99"),
        ("role commander none", "an incident always has a commander"),
    ],
)
@pytest.mark.usefixtures("postgres")
async def test_a_role_for_nobody_real_is_refused_and_named(
    fake_slack: FakeSlack, text: str, said: str
) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot, "Checkout returns 5xx place=in-place")
        answer = await say(bot, text)
        events = await bot.store.events(1)
    assert said in answer
    assert [event.kind for event in events] == ["declared"]


@pytest.mark.usefixtures("postgres")
async def test_a_scribe_is_given_and_taken_back(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot, "Checkout returns 5xx place=in-place")
        given = await say(bot, f"role scribe <@{OTHER_USER}|alice>")
        taken = await say(bot, "role scribe none")
        incident = await bot.store.get(1)
        timeline = await say(bot, "timeline")
    assert f"scribe is now <@{OTHER_USER}>" in given and "scribe is now (nobody)" in taken
    assert incident is not None and incident.scribe is None
    assert (
        f"Scribe (nobody) → <@{OTHER_USER}>" in timeline and f"Scribe <@{OTHER_USER}> → (nobody)" in timeline
    )


# --- the tactical update form --------------------------------------------------------------------------


async def submit(bot: Bot, private_metadata: str, conditions: str, actions: str = "", needs: str = "") -> str:
    values = {
        key: {"value": {"type": "plain_text_input", "value": value or None}}
        for key, value in (("conditions", conditions), ("actions", actions), ("needs", needs))
    }
    payload = view_submission_payload(UPDATE_VIEW, values, private_metadata=private_metadata, user_id=USER)
    body, headers = signed_interaction_request(SIGNING_SECRET, payload)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(f"{bot.url}/slack/events", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.text


@pytest.mark.usefixtures("postgres")
async def test_update_alone_opens_the_tactical_form_and_its_answer_is_the_update(
    fake_slack: FakeSlack,
) -> None:
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot)
        incident = await bot.store.get(1)
        assert incident is not None
        room = incident.channel_id
        answer = await say(bot, "update", channel=room)
        opened = await fake_slack.wait_for_call_async("views.open")
        view = opened.params["view"]
        refused = await submit(bot, view["private_metadata"], conditions="")
        accepted = await submit(
            bot, view["private_metadata"], "5xx at 2 %, checkout only", "rolling back to v2.0.5", "a DBA"
        )
        update = await bot.posted(
            lambda call: "rolling back to v2.0.5" in block_text(call.params.get("blocks", []))
        )
        stored = await bot.store.get(1)
        events = await bot.store.events(1)
    assert "The update form of INC-1 is open" in answer
    assert view["callback_id"] == UPDATE_VIEW and json.loads(view["private_metadata"]) == {
        "incident": 1,
        "channel": room,
    }
    assert [block["block_id"] for block in view["blocks"] if block["type"] == "input"] == [
        "conditions",
        "actions",
        "needs",
    ]
    assert json.loads(refused)["errors"] == {"conditions": "Say what is happening now"}
    assert accepted == ""  # accepted: the modal closes
    assert update.params["channel"] == room and update.params["thread_ts"] == stored.header_ts  # type: ignore[union-attr]
    shown = block_text(update.params["blocks"])
    assert "*Conditions:* 5xx at 2 %, checkout only" in shown and "*Needs:* a DBA" in shown
    assert stored is not None and stored.last_update == (
        "Conditions: 5xx at 2 %, checkout only\nActions: rolling back to v2.0.5\nNeeds: a DBA"
    )
    assert events[-1].details["tactical"]["actions"] == "rolling back to v2.0.5"
    # The stakeholders' announcement shows the latest summary.
    last = [call for call in fake_slack.calls_to("chat.update") if call.params["channel"] == STAKEHOLDERS][-1]
    assert "Needs: a DBA" in block_text(last.params["blocks"])
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_update_alone_from_the_terminal_asks_for_text(fake_slack: FakeSlack) -> None:
    from commands import incident
    from commands.base import UsageError

    args = incident.parse(["update", "inc=1"])
    assert args.text == "" and args.incident_id == 1
    async with incident_bot(fake_slack, **workspace(fake_slack)) as bot:
        await declare(bot, "Checkout returns 5xx place=in-place")
        with pytest.raises(UsageError, match="update needs text"):
            await incident.run(bot.store, args, actor=USER, channel_id=CHANNEL, contacts=[])


# --- the RCA, bookmarked ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_the_rca_draft_then_its_issue_are_bookmarked_in_the_incident_channel(
    fake_slack: FakeSlack,
) -> None:
    with FakeGitHub() as github:
        async with incident_bot(fake_slack, github, **workspace(fake_slack)) as bot:
            await declare(bot)
            incident = await bot.store.get(1)
            assert incident is not None
            room = incident.channel_id
            await say(bot, f"role scribe <@{OTHER_USER}>", channel=room)
            await say(bot, "resolve rolled back", channel=room)
            drafted = await say(bot, "timeline", channel=room)
            await bot.command("/rca", "", channel=room)
            preview = await bot.posted(lambda call: str(call.params.get("text")).startswith("RCA draft"))
            added = await fake_slack.wait_for_call_async(
                "bookmarks.add", lambda call: call.params.get("title") == "RCA draft"
            )
            draft_mark = added.response["bookmark"]  # type: ignore[index]
            permalink = await fake_slack.wait_for_call_async("chat.getPermalink")
            await bot.command("/rca", "1 file", channel=room)
            await fake_slack.wait_for_call_async("bookmarks.edit", lambda call: "issues" in str(call.params))
        body = str(github.issues[1]["body"])
        assert github.violations == []
    assert "Scribe (nobody)" in drafted
    assert permalink.params["message_ts"] == preview.response["ts"]  # type: ignore[index]
    assert draft_mark["link"] == permalink.response["permalink"]  # type: ignore[index]
    [filed] = [mark for mark in fake_slack.bookmarks[room] if mark["id"] == draft_mark["id"]]
    assert filed["title"] == "RCA: GitHub issue #1" and filed["link"] == github.issues[1]["html_url"]
    assert "scribe alice" in body  # the roles are in the RCA
    assert fake_slack.violations == []
