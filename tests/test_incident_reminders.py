"""Update reminders: due from the record and the settings, sent once across replicas, not lost to a
restart. Times are given to the scheduler's tick (no test waits for a reminder)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.incident_store import IncidentStore, Severity
from bot.render.incident_workspace import REMIND_UPDATE_ACTION, UPDATE_VIEW
from bot.services import Services
from bot.slack.incident_reminders import send_due_reminders
from bot.state import migrate
from bot.web.reminders import ReminderLoop
from commands import incident
from tests.conftest import BOT_TOKEN, make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.incident_helpers import CHANNEL, OTHER_USER, USER, block_text, incident_bot

DATABASE = "chatops_test_incident_reminders"
T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
EVERY: dict[Severity, timedelta | None] = {
    "P1": timedelta(minutes=30),
    "P2": timedelta(minutes=60),
    "P3": None,
    "P4": None,
}


@dataclass
class World:
    services: Services
    store: IncidentStore
    client: AsyncWebClient
    fake: FakeSlack
    dsn: str

    async def declare(self, channel: str, severity: Severity = "P1", commander: str = USER) -> int:
        result = await incident.declare(
            self.store,
            channel_id=channel,
            title=f"{severity} trouble in {channel}",
            severity=severity,
            actor=commander,
            force=False,
            contacts=[],
            now=T0,
        )
        assert result.incident is not None
        return result.incident.id

    async def act(self, number: int, text: str, minutes: float) -> None:
        await incident.run(
            self.store,
            incident.parse([f"inc={number} {text}"]),
            actor=USER,
            channel_id=None,
            contacts=[],
            now=T0 + timedelta(minutes=minutes),
        )

    async def tick(self, minutes: float, every: dict[Severity, timedelta | None] = EVERY) -> list[int]:
        return await send_due_reminders(
            self.services.state_db, self.client, every, T0 + timedelta(minutes=minutes)
        )

    def replica(self) -> Services:
        """Another process on the same database (its own pool of connections)."""
        return Services.build(make_settings(state_database_url=self.dsn))


@pytest.fixture
async def world(postgres: str, fake_slack: FakeSlack) -> AsyncIterator[World]:
    dsn = await recreate_database(DATABASE)
    services = Services.build(make_settings(state_database_url=dsn))
    await migrate(services.state_db)
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    try:
        yield World(services, IncidentStore(services.state_db), client, fake_slack, dsn)
    finally:
        await services.aclose()


async def test_a_reminder_comes_after_the_interval_of_quiet_and_again_after_another(world: World) -> None:
    number = await world.declare("C0ROOM0001", "P1")
    assert await world.tick(29) == []
    assert await world.tick(30) == [number]
    assert await world.tick(31) == []  # sent: the next one is an interval later
    assert await world.tick(59) == []
    assert await world.tick(60) == [number]
    # An update starts the interval again: quiet since minute 70, so due at 100.
    await world.act(number, "update rolled back", 70)
    assert await world.tick(99) == []
    assert await world.tick(100) == [number]
    [first, *_] = [
        call for call in world.fake.calls_to("chat.postMessage") if call.params["channel"] == "C0ROOM0001"
    ]
    shown = block_text(first.params["blocks"])
    assert f"<@{USER}>" in shown and "no update for 30 min" in shown and "every 30m" in shown
    assert first.params["blocks"][-1]["elements"][0]["action_id"] == REMIND_UPDATE_ACTION
    assert "thread_ts" not in first.params  # in the channel, where the commander sees it


async def test_each_severity_has_its_interval_and_settings_change_them(world: World) -> None:
    p2 = await world.declare("C0ROOM0002", "P2")
    p3 = await world.declare("C0ROOM0003", "P3")
    resolved = await world.declare("C0ROOM0004", "P1")
    await world.act(resolved, "resolve done", 5)
    assert await world.tick(45) == []
    assert await world.tick(60) == [p2]
    assert await world.tick(600) == [p2]  # P3: none by default; resolved: none
    assert await world.tick(601, EVERY | {"P3": timedelta(hours=2)}) == [p3]
    # A severity change takes the new severity's interval at once: 30 min after the last reminder.
    await world.act(p3, "sev P1", 602)
    assert await world.tick(630) == []
    assert await world.tick(631) == [p3]


async def test_without_a_commander_the_reminder_says_so(world: World) -> None:
    number = await world.declare("C0ROOM0005", "P1", commander="terminal")
    assert await world.tick(30) == [number]
    [reminder] = world.fake.calls_to("chat.postMessage")
    assert "Nobody commands it yet" in block_text(reminder.params["blocks"])
    assert "/incident commander @you" in block_text(reminder.params["blocks"])


async def test_replicas_send_each_reminder_once(world: World) -> None:
    numbers = [await world.declare(f"C0ROOM00{index:02d}", "P1") for index in range(10, 16)]
    replicas = [world.replica() for _ in range(3)]
    try:
        now = T0 + timedelta(minutes=31)
        sent = await asyncio.gather(
            *(
                send_due_reminders(item.state_db, world.client, EVERY, now)
                for item in [world.services, *replicas]
            ),
            *(send_due_reminders(item.state_db, world.client, EVERY, now) for item in replicas),
        )
    finally:
        for item in replicas:
            await item.aclose()
    flat = [number for batch in sent for number in batch]
    assert sorted(flat) == numbers  # every one sent, none twice
    assert len(world.fake.calls_to("chat.postMessage")) == len(numbers)


async def test_a_reminder_another_replica_is_claiming_is_skipped_not_sent_again(world: World) -> None:
    number = await world.declare("C0ROOM0030", "P1")
    other = await asyncpg.connect(world.dsn)
    try:
        claiming = other.transaction()
        await claiming.start()
        # Another replica's claim, not committed yet: it holds the row.
        await other.execute(
            "UPDATE incidents SET last_reminded_at = $2 WHERE id = $1", number, T0 + timedelta(minutes=31)
        )
        assert await world.tick(31) == []  # skipped at once (waiting would end in the store's timeout)
        await claiming.commit()
    finally:
        await other.close()
    assert await world.tick(32) == []  # it was sent by the other one
    assert await world.tick(61) == [number]
    assert world.fake.calls_to("chat.postMessage")[-1].params["channel"] == "C0ROOM0030"


async def test_a_restart_loses_no_reminder_and_sends_none_twice(world: World) -> None:
    first = await world.declare("C0ROOM0020", "P1")
    second = await world.declare("C0ROOM0021", "P2")
    settings = make_settings(state_database_url=world.dsn)
    before = ReminderLoop(world.services, world.client, clock=lambda: T0 + timedelta(minutes=35))
    assert await before.tick() == [first]
    # The process stops; another starts later, with nothing in memory: the record says what is due.
    restarted = Services.build(settings)
    try:
        after = ReminderLoop(restarted, world.client, clock=lambda: T0 + timedelta(minutes=61))
        assert await after.tick() == [second]  # P2's was due at 60 while nobody was running
        after.clock = lambda: T0 + timedelta(minutes=64)
        assert await after.tick() == []  # P1's next one is 30 min after the last (35): at 65
        after.clock = lambda: T0 + timedelta(minutes=65)
        assert await after.tick() == [first]
    finally:
        await restarted.aclose()


async def test_a_tick_survives_the_database_being_down(fake_slack: FakeSlack) -> None:
    services = Services.build(make_settings(state_database_url="postgresql://postgres@127.0.0.1:1/none"))
    try:
        loop = ReminderLoop(services, AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url))
        assert await loop.tick() == []
    finally:
        await services.aclose()


@pytest.mark.usefixtures("postgres")
async def test_the_reminders_button_opens_the_update_form(fake_slack: FakeSlack) -> None:
    fake_slack.add_user(USER, "oncall")
    async with incident_bot(fake_slack, database=DATABASE + "_bot") as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P1"))
        declared = await bot.store.get(1)
        assert declared is not None and bot.runtime.slack_client is not None
        loop = ReminderLoop(
            bot.runtime.services,
            bot.runtime.slack_client,
            clock=lambda: declared.declared_at + timedelta(minutes=31),
        )
        assert await loop.tick() == [1]
        reminder = await bot.posted(lambda call: REMIND_UPDATE_ACTION in str(call.params.get("blocks")))
        button = reminder.params["blocks"][-1]["elements"][0]
        await bot.click(REMIND_UPDATE_ACTION, button["value"], channel=CHANNEL)
        opened = await fake_slack.wait_for_call_async("views.open")
        # Someone without the responder role gets no form.
        bot.runtime.services.settings.responders.clear()
        bot.runtime.services.settings.responders.append(USER)
        await bot.click(REMIND_UPDATE_ACTION, button["value"], user=OTHER_USER, channel=CHANNEL)
        refused = await fake_slack.wait_for_call_async(
            "chat.postEphemeral", lambda call: call.params.get("user") == OTHER_USER
        )
    assert opened.params["view"]["callback_id"] == UPDATE_VIEW
    assert "responder role" in str(refused.params["text"])
    assert len(fake_slack.calls_to("views.open")) == 1
