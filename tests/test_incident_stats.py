"""`/incident stats`: incidents by severity, time to commander and to resolution (median, P90), from the
bot's own records; a table and a picture in Slack, a table or JSON at the terminal."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.incident_store import Incident, IncidentStore, Severity
from bot.render import incident as incident_render
from bot.render.picture import picture_of
from bot.services import Services
from bot.state import migrate
from commands import incident
from commands.base import UsageError
from commands.incident_stats import compute, percentile
from tests.conftest import make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.incident_helpers import CHANNEL, USER, incident_bot
from tests.test_render_both_ways import console, slack_markup

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def record(
    number: int,
    severity: Severity,
    *,
    days_ago: float,
    to_commander: float | None,
    to_resolution: float | None,
    impact_before: float = 0.0,
) -> Incident:
    """An incident declared `days_ago`, its impact `impact_before` minutes earlier; times in minutes."""
    declared = NOW - timedelta(days=days_ago)
    started = declared - timedelta(minutes=impact_before)
    return Incident(
        id=number,
        channel_id="C0X",
        title="t",
        severity=severity,
        status="resolved" if to_resolution is not None else "open",
        commander=USER if to_commander is not None else None,
        declared_by=USER,
        started_at=started,
        declared_at=declared,
        acknowledged_at=started + timedelta(minutes=to_commander) if to_commander is not None else None,
        resolved_at=started + timedelta(minutes=to_resolution) if to_resolution is not None else None,
    )


def test_percentiles_interpolate_between_the_closest_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([2.0, 4.0, 6.0, 8.0, 10.0], 0.5) == 6.0
    assert percentile([10.0, 2.0, 8.0, 4.0, 6.0], 0.9) == pytest.approx(9.2)
    assert percentile([1.0, 2.0], 0.5) == 1.5


def test_the_figures_by_severity_and_in_all() -> None:
    incidents = [
        # P1: a commander after 2, 4, 6, 8, 10 min (from the alert's start); resolved after 30..70.
        *(
            record(n, "P1", days_ago=n, to_commander=2.0 * n, to_resolution=20.0 + 10 * n, impact_before=1)
            for n in range(1, 6)
        ),
        record(6, "P2", days_ago=3, to_commander=None, to_resolution=None),  # open, nobody took it
        record(7, "P2", days_ago=4, to_commander=0.0, to_resolution=240.0),
        record(8, "P3", days_ago=120, to_commander=1.0, to_resolution=10.0),  # outside 90 days
    ]
    stats = compute(incidents, timedelta(days=90), NOW)
    p1, p2, p3, p4 = stats.by_severity
    assert (p1.declared, p1.open, p1.resolved, p1.without_commander) == (5, 0, 5, 0)
    assert p1.time_to_commander.median_seconds == 6 * 60
    assert p1.time_to_commander.p90_seconds == pytest.approx(9.2 * 60)
    assert p1.time_to_resolution.median_seconds == 50 * 60
    assert p1.time_to_resolution.p90_seconds == pytest.approx(66 * 60)
    assert (p2.declared, p2.open, p2.resolved, p2.without_commander) == (2, 1, 1, 1)
    assert p2.time_to_commander.count == 1 and p2.time_to_resolution.median_seconds == 240 * 60
    assert p3.declared == 0 and p3.time_to_commander.median_seconds is None and p4.declared == 0
    assert (stats.total.declared, stats.total.open, stats.total.without_commander) == (7, 1, 1)
    assert stats.total.time_to_resolution.count == 6


def test_stats_grammar() -> None:
    assert incident.parse(["stats"]).since == timedelta(days=90)
    assert incident.parse(["stats since=30d"]).since == timedelta(days=30)
    assert incident.parse(["stats", "since=365d"]).since == timedelta(days=365)
    with pytest.raises(UsageError, match="since: `1y` is not a duration"):
        incident.parse(["stats since=1y"])
    with pytest.raises(UsageError, match="stats takes no arguments; `P1` is not one"):
        incident.parse(["stats P1"])
    with pytest.raises(UsageError, match="`sev=P1` does not go with stats"):
        incident.parse(["stats sev=P1"])


def test_the_terminal_and_slack_show_the_same_figures() -> None:
    stats = compute([record(1, "P1", days_ago=1, to_commander=5, to_resolution=65)], timedelta(days=90), NOW)
    result = incident.IncidentResult(outcome="stats", stats=stats, as_of=NOW, png=b"\x89PNG...")
    printer, buffer = console()
    incident_render.terminal(result, printer)
    shown = buffer.getvalue()
    reply = incident_render.slack(result)
    assert "Incidents, the last 90d" in shown and "5 min" in shown and "1 h 05 min" in shown
    assert slack_markup(shown) == []
    assert not reply.ephemeral  # for everyone in the channel
    table = reply.main.blocks[1]["text"]["text"]
    assert table.startswith("```") and "P1" in table and "5 min" in table and "1 h 05 min" in table
    [picture] = reply.files
    assert picture.content == b"\x89PNG..." and picture.filename == "incident-stats.png"
    assert "time to commander median 5 min" in picture.alt_text


async def test_the_picture_is_drawn_for_slack_and_for_png() -> None:
    stats = compute(
        [
            record(n, "P1" if n % 2 else "P2", days_ago=n, to_commander=n, to_resolution=30 * n)
            for n in range(1, 6)
        ],
        timedelta(days=90),
        NOW,
    )
    result = incident.IncidentResult(outcome="stats", stats=stats, as_of=NOW)
    png = await picture_of(result)
    assert png is not None and png.startswith(b"\x89PNG")
    assert "png" not in json.loads(result.model_dump_json())  # never in the JSON


async def seed(store: IncidentStore) -> None:
    """Three incidents of the last days: two P1 (one from an alert 4 min before), one P3 still open."""
    now = datetime.now(UTC).replace(microsecond=0)
    for days, severity, started_before, resolve_after in (
        (2, "P1", 4, 40),
        (1, "P1", 0, 20),
        (0.5, "P3", 0, None),
    ):
        declared = now - timedelta(days=days)
        result = await incident.declare(
            store,
            channel_id=f"C0STATS{int(days * 10):03d}",
            title="t",
            severity=severity,  # type: ignore[arg-type]
            actor=USER,
            force=False,
            contacts=[],
            now=declared,
            started_at=declared - timedelta(minutes=started_before),
        )
        assert result.incident is not None
        if resolve_after is not None:
            args = incident.parse([f"inc={result.incident.id} resolve"])
            await incident.run(
                store,
                args,
                actor=USER,
                channel_id=None,
                contacts=[],
                now=declared + timedelta(minutes=resolve_after),
            )


@pytest.mark.usefixtures("postgres")
def test_the_terminal_prints_the_figures_as_json() -> None:
    dsn = asyncio.run(recreate_database("chatops_test_incident_stats_cli"))

    async def prepare() -> None:
        services = Services.build(make_settings(state_database_url=dsn))
        try:
            await migrate(services.state_db)
            await seed(IncidentStore(services.state_db))
        finally:
            await services.aclose()

    asyncio.run(prepare())
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHATOPS_", "SLACK_"))}
    env["CHATOPS_STATE_DATABASE_URL"] = dsn
    shown = subprocess.run(
        [str(REPO / ".venv" / "bin" / "chatops"), "incident", "stats", "since=30d", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/tmp",
    )
    assert shown.returncode == 0, shown.stderr
    stats = json.loads(shown.stdout)["stats"]
    p1 = stats["by_severity"][0]
    assert (p1["severity"], p1["declared"], p1["resolved"]) == ("P1", 2, 2)
    # From the impact's start: the alert's 4 min before the declaration counts, in both times.
    assert p1["time_to_commander"]["median_seconds"] == 2 * 60
    assert p1["time_to_resolution"]["median_seconds"] == 32 * 60
    assert stats["total"]["declared"] == 3 and stats["total"]["open"] == 1
    assert stats["window_seconds"] == 30 * 86400


@pytest.mark.usefixtures("postgres")
async def test_slack_posts_the_table_and_its_picture_in_the_thread(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack, database="chatops_test_incident_stats_slack") as bot:
        await seed(bot.store)
        await bot.command("/incident", "stats since=7d")
        table = await bot.posted(lambda call: "Incidents, the last 7d" in str(call.params.get("blocks")))
        uploaded = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=30)
    assert table.params["channel"] == CHANNEL and "thread_ts" not in table.params
    assert uploaded.params["thread_ts"] == table.response["ts"]  # type: ignore[index]
    [picture] = fake_slack.files.values()
    assert picture.content is not None and picture.content.startswith(b"\x89PNG")


@pytest.mark.usefixtures("postgres")
async def test_time_to_commander_ends_at_the_first_commander() -> None:
    dsn = await recreate_database("chatops_test_incident_stats_mtta")
    services = Services.build(make_settings(state_database_url=dsn))
    try:
        await migrate(services.state_db)
        store = IncidentStore(services.state_db)
        declared = await incident.declare(
            store,
            channel_id="C0MTTA0001",
            title="t",
            severity="P2",
            actor="terminal",  # not a person: nobody commands it yet
            force=False,
            contacts=[],
            now=NOW,
            started_at=NOW - timedelta(minutes=3),
        )
        assert declared.incident is not None and declared.incident.acknowledged_at is None
        for minutes, person in ((5, "U0FIRST001"), (9, "U0SECOND01")):
            args = incident.parse([f"inc=1 commander {person}"])
            await incident.run(
                store, args, actor=USER, channel_id=None, contacts=[], now=NOW + timedelta(minutes=minutes)
            )
        stored = await store.get(1)
        figures = compute(await store.declared_since(NOW - timedelta(days=1)), timedelta(days=1), NOW)
    finally:
        await services.aclose()
    assert stored is not None and stored.commander == "U0SECOND01"
    assert stored.acknowledged_at == NOW + timedelta(minutes=5)
    assert figures.by_severity[1].time_to_commander.median_seconds == 8 * 60
