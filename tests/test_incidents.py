"""Incidents in Slack: the pinned header kept current, its thread, its timeline (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.incident_store import IncidentStore
from bot.render.incident import ASK_DECLARE_ACTION, ASK_NOTE_ACTION
from bot.services import Services
from bot.slack import incidents
from bot.state import migrate
from commands import incident
from commands.base import UsageError
from tests.conftest import BOT_TOKEN, make_settings, recreate_database
from tests.fakes import FakeSlack
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

REPO = Path(__file__).resolve().parents[1]


async def declare(bot: Bot, text: str = "Checkout returns 5xx sev=P2") -> str:
    """Declare through Slack; return the header's ts."""
    await bot.answer(await bot.command("/incident", f"declare {text}"))
    header = await bot.posted(is_header)
    return str(header.response["ts"] if header.response else "")


def header_text(bot: Bot, ts: str) -> str:
    message = next(item for item in bot.slack.messages(CHANNEL) if item["ts"] == ts)
    return block_text(message.get("blocks", []))


# --- declare -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_declare_posts_one_pinned_header_with_every_field(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        answer = await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P2"))
        header = await bot.posted(is_header)
        ts = str(header.response["ts"] if header.response else "")
        await bot.slack.wait_for_call_async("pins.add")
        kickoff = await bot.posted(in_thread(ts))
        stored = await bot.store.open_in(CHANNEL)
    assert "Declared INC-1" in answer
    assert (CHANNEL, ts) in fake_slack.pins
    text = block_text(header.params["blocks"])
    assert "INC-1 · P2 · Checkout returns 5xx" in text
    for field in (
        "*Status*\nOpen",
        "*Severity*\nP2 (High)",
        f"*Commander*\n<@{USER}>",
        "*Started*",
        "*Duration*",
    ):
        assert field in text, field
    assert "devops@3dpot.com" in text  # the runbook's emergency contacts, by default
    assert "declared by" in block_text(kickoff.params["blocks"])
    assert stored is not None and stored.header_ts == ts and stored.severity == "P2"
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_a_second_declare_in_the_channel_asks_and_creates_nothing(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        await declare(bot)
        answer = await bot.answer(
            await bot.command("/incident", "declare Payments are slow", user=OTHER_USER)
        )
        post = fake_slack.response_posts[-1]
        buttons = {element["action_id"]: element for element in post.body["blocks"][-1]["elements"]}
        async with bot.runtime.services.state_db.connection() as conn:
            count_while_asking = await conn.fetchval("SELECT count(*) FROM incidents")
        # "Same incident": the would-be title becomes a note of INC-1.
        await bot.answer(await bot.click(ASK_NOTE_ACTION, buttons[ASK_NOTE_ACTION]["value"], user=OTHER_USER))
        events = await bot.store.events(1)
        # "Different incident": declared although INC-1 is open.
        await bot.answer(
            await bot.click(ASK_DECLARE_ACTION, buttons[ASK_DECLARE_ACTION]["value"], user=OTHER_USER)
        )
        second = await bot.store.open_in(CHANNEL)
    assert "INC-1 · Checkout returns 5xx* is already open here" in answer
    assert "Is *Payments are slow* the same incident?" in answer
    assert count_while_asking == 1
    assert [(event.kind, event.text) for event in events][-1] == ("note", "Payments are slow")
    assert second is not None and second.id == 2 and second.title == "Payments are slow"
    assert len([call for call in fake_slack.calls_to("chat.postMessage") if is_header(call)]) == 2


@pytest.mark.usefixtures("postgres")
async def test_concurrent_declares_make_one_incident(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        store, now = bot.store, datetime.now(UTC)
        results = await asyncio.gather(
            *(
                incident.declare(
                    store,
                    channel_id=CHANNEL,
                    title=f"same alert {n}",
                    severity="P2",
                    actor=USER,
                    force=False,
                    contacts=[],
                    now=now,
                )
                for n in range(5)
            )
        )
    assert sorted(result.outcome for result in results) == ["asked"] * 4 + ["declared"]


# --- updates, notes, severity, commander, resolve -------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_the_life_of_an_incident_in_its_thread_and_header(fake_slack: FakeSlack) -> None:
    fake_slack.add_user(OTHER_USER, "alice", real_name="Alice Example")
    fake_slack.respond_with(
        "users.list",
        lambda call: {
            "ok": True,
            "members": list(fake_slack.users.values()),
            "response_metadata": {"next_cursor": ""},
        },
    )
    async with incident_bot(fake_slack) as bot:
        ts = await declare(bot)
        # Apostrophes and `=` in free text are text (Slack sends them raw; shlex would choke).
        await bot.answer(await bot.command("/incident", "update We're rolling back api=v2.0.5; don't retry"))
        update = await bot.posted(lambda call: "rolling back" in str(call.params.get("text")))
        await bot.answer(await bot.command("/incident", "note cause: migration 20251120 did not run"))
        note = await bot.posted(lambda call: "migration" in str(call.params.get("text")))
        await bot.answer(await bot.command("/incident", "sev P1"))
        await bot.answer(await bot.command("/incident", "commander @alice"))
        resolved = await bot.answer(await bot.command("/incident", "resolve rolled back to v2.0.5"))
        resolution = await bot.posted(lambda call: "Resolved after" in str(call.params.get("text")))
        timeline = await bot.answer(await bot.command("/incident", "timeline"))
        stored = await bot.store.get(1)
        replies = await bot.runtime.services.slack.client.conversations_replies(channel=CHANNEL, ts=ts)  # type: ignore[union-attr]
    assert update.params["thread_ts"] == ts and update.params["reply_broadcast"] in (True, "true", "1")
    assert "We're rolling back api=v2.0.5; don't retry" in block_text(update.params["blocks"])
    assert note.params["thread_ts"] == ts and not note.params.get("reply_broadcast")
    assert resolution.params["thread_ts"] == ts and resolution.params["reply_broadcast"] in (
        True,
        "true",
        "1",
    )
    assert "INC-1 resolved after" in resolved
    header = header_text(bot, ts)
    assert "*Status*\nResolved" in header and "*Severity*\nP1 (Critical)" in header
    assert f"*Commander*\n<@{OTHER_USER}>" in header and "rolled back to v2.0.5" in header
    assert "Latest update" in header and "rolling back" in header
    assert len(fake_slack.calls_to("chat.update")) >= 5  # the header, edited in place at every change
    assert stored is not None and stored.status == "resolved" and stored.commander == OTHER_USER
    assert stored.resolved_at is not None and stored.summary == "rolled back to v2.0.5"
    kinds = ["declared", "update", "note", "severity", "commander", "resolved"]
    positions = [timeline.index(f"*{kind}*") for kind in kinds]
    assert positions == sorted(positions), timeline  # in order
    assert f"<@{USER}>" in timeline
    assert len(replies["messages"]) >= 7  # header + kickoff + update, note, sev, commander, resolve
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres", "redis")
async def test_results_of_other_commands_go_to_the_incident_thread_and_timeline(
    fake_slack: FakeSlack,
) -> None:
    async with incident_bot(fake_slack, dependency_timeout_seconds=0.5) as bot:
        ts = await declare(bot)
        await bot.command("/health", "")
        health = await bot.posted(
            lambda call: str(call.params.get("text", "")).startswith("Health:"), timeout=20
        )
        events = await bot.store.events(1)
    assert health.params["thread_ts"] == ts
    assert [event.kind for event in events][-1] == "/health"
    assert events[-1].actor == USER and events[-1].text.startswith("Health:")


@pytest.mark.usefixtures("postgres", "redis")
async def test_without_an_open_incident_results_go_to_the_channel(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, dependency_timeout_seconds=0.5) as bot:
        await bot.command("/health", "")
        health = await bot.posted(
            lambda call: str(call.params.get("text", "")).startswith("Health:"), timeout=20
        )
    assert "thread_ts" not in health.params


# --- permissions and bad input -----------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_changing_an_incident_needs_the_responder_role_reading_does_not(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, responders=[OTHER_USER], viewers=["*"]) as bot:
        await bot.command("/incident", "declare Not mine")
        refusal = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        contacts = await bot.answer(await bot.command("/incident", "contacts"))
        await bot.answer(await bot.command("/incident", "declare Mine sev=P4", user=OTHER_USER))
        count = len(await bot.store.events(1))
    assert "you are not allowed to run /incident" in refusal.params["text"]
    assert "Infraestrutura" in contacts and "oncall@3dpot.com" in contacts
    assert count == 1  # only OTHER_USER's incident exists


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("note the db is fine", "there is no open incident in this channel"),
        ("inc=99 timeline", "there is no incident INC-99"),
        ("declare", "declare needs a title"),
        ("declare Outage sev=P7", "`P7` is not a severity"),
        ("sev high", "`high` is not a severity"),
        ("launch", "unknown action `launch`"),
        ("commander alice bob", "commander takes one person"),
        ("timeline now", "timeline takes no arguments"),
    ],
)
@pytest.mark.usefixtures("postgres")
async def test_bad_input_gets_a_clear_reply_only_for_the_caller(
    fake_slack: FakeSlack, text: str, message: str
) -> None:
    async with incident_bot(fake_slack) as bot:
        await bot.command("/incident", text)
        reply = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
    assert message in reply.params["text"]
    assert fake_slack.calls_to("chat.postMessage") == []


@pytest.mark.usefixtures("postgres")
async def test_contacts_come_from_configuration(fake_slack: FakeSlack) -> None:
    contacts = [incident.Contact(role="SRE on call", area="Platform", contact="+55 11 5555-0000")]
    async with incident_bot(fake_slack, incident_contacts=contacts) as bot:
        answer = await bot.answer(await bot.command("/incident", "contacts"))
        await declare(bot, "Queue backlog")
        header = await bot.posted(is_header)
    assert "*Platform*: SRE on call — +55 11 5555-0000" in answer
    assert "devops@3dpot.com" not in answer
    assert "+55 11 5555-0000" in block_text(header.params["blocks"])


@pytest.mark.usefixtures("postgres")
async def test_a_header_the_bot_cannot_post_is_reported_and_the_incident_kept(fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.postMessage", "not_in_channel", times=1)
    async with incident_bot(fake_slack) as bot:
        answer = await bot.answer(await bot.command("/incident", "declare Private channel trouble"))
        stored = await bot.store.open_in(CHANNEL)
        # The next change posts the header that is missing, then pins it.
        await bot.answer(await bot.command("/incident", "note bot invited"))
        header = await bot.posted(lambda call: is_header(call) and bool((call.response or {}).get("ok")))
        healed = await bot.store.open_in(CHANNEL)
    assert "could not post the header: not_in_channel (invite the bot to the channel)" in answer
    assert stored is not None and stored.header_ts is None
    assert healed is not None and healed.header_ts == header.response["ts"]  # type: ignore[index]
    assert (CHANNEL, healed.header_ts) in fake_slack.pins


# --- the API other parts call --------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_record_returns_the_thread_only_while_an_incident_is_open(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        state_db = bot.runtime.services.state_db
        assert await incidents.record(state_db, CHANNEL, "/rollback", "rolled back", USER) is None
        ts = await declare(bot)
        assert await incidents.record(state_db, CHANNEL, "/rollback", "Rolled back to v2.0.5", USER) == ts
        assert await incidents.record(state_db, "C0ELSEWHERE", "/rollback", "elsewhere", USER) is None
        assert await incidents.thread_for(state_db, CHANNEL) == ts
        posted = await incidents.post_in_thread(
            fake_slack_client(bot), state_db, CHANNEL, "mfa", "locked out", USER
        )
        events = await bot.store.events(1)
    assert posted is not None
    assert [(event.kind, event.text) for event in events][-2:] == [
        ("/rollback", "Rolled back to v2.0.5"),
        ("mfa", "locked out"),
    ]


def fake_slack_client(bot: Bot):  # type: ignore[no-untyped-def]
    assert bot.runtime.slack_client is not None
    return bot.runtime.slack_client


async def test_record_never_raises_when_the_state_database_is_down() -> None:
    services = Services.build(make_settings(state_database_url="postgresql://postgres@127.0.0.1:1/none"))
    try:
        assert await incidents.record(services.state_db, CHANNEL, "/health", "text", USER) is None
    finally:
        await services.aclose()


# --- grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["declare Checkout 5xx sev=P2"], {"action": "declare", "text": "Checkout 5xx", "severity": "P2"}),
        (
            ["declare", "Checkout", "5xx", "sev=p1"],
            {"action": "declare", "text": "Checkout 5xx", "severity": "P1"},
        ),
        (['declare "Quoted title" force=yes'], {"action": "declare", "text": "Quoted title", "force": True}),
        (["update we're on it"], {"action": "update", "text": "we're on it", "graph": False}),
        (
            ["update graph=yes error rate back under 1 %"],
            {"text": "error rate back under 1 %", "graph": True},
        ),
        # An option of the action counts wherever it stands; quoted, it is text.
        (["update the graph=yes flag is back"], {"text": "the flag is back", "graph": True}),
        (['update "the graph=yes flag" is text here'], {"text": '"the graph=yes flag" is text here'}),
        (["inc=#12 note x=y is text"], {"action": "note", "text": "x=y is text", "incident_id": 12}),
        (["channel=C0ABC123 sev 2"], {"action": "sev", "severity": "P2", "channel_id": "C0ABC123"}),
        (["resolve"], {"action": "resolve", "text": ""}),
        (["ic <@U0ALICE01|alice>"], {"action": "commander", "text": "<@U0ALICE01|alice>"}),
    ],
)
def test_grammar(tokens: list[str], expected: dict[str, object]) -> None:
    parsed = incident.parse(tokens).model_dump()
    assert {key: parsed[key] for key in expected} == expected


def test_a_title_over_the_limit_is_refused() -> None:
    with pytest.raises(UsageError, match="keep it under 120"):
        incident.parse(["declare " + "x" * 121])


# --- the terminal --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
def test_the_terminal_declares_and_shows_the_timeline(fake_slack: FakeSlack) -> None:
    dsn = asyncio.run(recreate_database("chatops_test_incidents_cli"))
    env = {
        **os.environ,
        "CHATOPS_STATE_DATABASE_URL": dsn,
        "CHATOPS_INCIDENT_CHANNEL": CHANNEL,
        "CHATOPS_INCIDENT_WORKSPACE": "in-place",
        "CHATOPS_CLI_USER": USER,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "CHATOPS_SLACK_API_URL": fake_slack.url,
    }
    chatops = str(REPO / ".venv" / "bin" / "chatops")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [chatops, *args], env=env, capture_output=True, text=True, timeout=60, cwd="/tmp"
        )

    declared = run("incident", "declare", "Disk full on db-1", "sev=P3")
    again = run("incident", "declare", "Disk full again")
    noted = run("incident", "note", "impact: uploads failed for 10 minutes")
    timeline = run("incident", "timeline", "--json")
    assert declared.returncode == 0, declared.stderr
    assert "INC-1" in declared.stdout and "Disk full on db-1" in declared.stdout
    assert again.returncode == 1 and "already open" in again.stdout
    assert noted.returncode == 0, noted.stderr
    data = json.loads(timeline.stdout)
    assert [event["kind"] for event in data["events"]] == ["declared", "note"]
    # The terminal's changes reach Slack too: the header was posted and pinned in the channel.
    assert any(is_header(call) for call in fake_slack.calls_to("chat.postMessage"))
    assert fake_slack.pins


@pytest.mark.usefixtures("postgres")
async def test_migrations_apply_on_an_empty_database() -> None:
    dsn = await recreate_database("chatops_test_incidents_migrate")
    services = Services.build(make_settings(state_database_url=dsn))
    now = datetime.now(UTC)
    try:
        applied = await migrate(services.state_db)
        store = IncidentStore(services.state_db)
        result = await incident.declare(
            store,
            channel_id=CHANNEL,
            title="t",
            severity="P4",
            actor="terminal",
            force=False,
            contacts=[],
            now=now,
            started_at=now - timedelta(minutes=5),
        )
    finally:
        await services.aclose()
    assert "0003_incidents" in applied
    assert result.incident is not None and result.incident.commander is None  # "terminal" is not a person
    # PostgreSQL keeps microseconds, so the duration is exact.
    assert result.duration == timedelta(minutes=5)


async def test_an_update_can_carry_the_current_graph_into_the_thread(
    sandbox: object, fake_slack: FakeSlack
) -> None:
    async with incident_bot(fake_slack) as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P2"))
        header = await bot.posted(is_header)
        await bot.answer(await bot.command("/incident", "update graph=yes error rate is falling"))
        uploaded = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=30)
        update = await bot.posted(lambda call: "error rate is falling" in str(call.params.get("text")))
    assert uploaded.params["thread_ts"] == header.response["ts"] == update.params["thread_ts"]  # type: ignore[index]
    [picture] = fake_slack.files.values()
    assert picture.content.startswith(b"\x89PNG")
    assert "graph=yes" not in block_text(update.params["blocks"])
