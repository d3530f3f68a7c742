"""What changed just before what broke: onsets from real series, changes from the engine and the bot."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from adapters.prometheus import PrometheusAdapter, RangeResult, RangeSeries
from bot.render.changes import WAY_BACK_ACTION, changes_blocks, read_way_back
from bot.runners.changes import bot_changes, engine_changes
from bot.services import Services
from bot.state import migrate
from commands.changes import Change, ChangesReport, Onset, merge, onset_of, rank, what_changed
from commands.triage_checklist import PromqlCheck, load_checklist
from sandbox.manager import SandboxStatus
from tests.conftest import make_settings, recreate_database

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
CHECK = next(
    check
    for check in load_checklist(None).checks
    if isinstance(check, PromqlCheck) and check.id == "http_5xx_ratio"
)


def series(values: list[float], start: datetime = NOW - timedelta(minutes=20)) -> RangeResult:
    """A series with one point every 15 s from `start`."""
    points = [
        ((start + timedelta(seconds=15 * index)).timestamp(), value) for index, value in enumerate(values)
    ]
    return RangeResult(series=[RangeSeries(labels={}, points=points)])


# --- the onset -------------------------------------------------------------------------------------


def test_the_onset_is_where_the_series_last_crossed_its_threshold() -> None:
    values = [0.002] * 40 + [0.15] * 20
    onset = onset_of(CHECK, series(values), "warn", NOW - timedelta(minutes=20))
    assert onset is not None
    assert onset.at == NOW - timedelta(minutes=20) + timedelta(seconds=15 * 40)
    assert onset.describe() == "5xx error ratio rose from 0.2 % to 15 %"


def test_a_brief_earlier_spike_does_not_move_the_onset() -> None:
    values = [0.002] * 10 + [0.2] * 2 + [0.002] * 20 + [0.15] * 10
    onset = onset_of(CHECK, series(values), "warn", NOW - timedelta(minutes=20))
    assert onset is not None and onset.at == NOW - timedelta(minutes=20) + timedelta(seconds=15 * 32)


def test_no_onset_when_the_series_is_fine_now_and_none_known_when_always_breached() -> None:
    assert onset_of(CHECK, series([0.2] * 10 + [0.001] * 5), "warn", NOW) is None
    always = onset_of(CHECK, series([0.2] * 10), "warn", NOW - timedelta(minutes=20))
    assert always is not None and always.at is None and always.before is None


# --- ranking -----------------------------------------------------------------------------------------


def onset_at(at: datetime) -> Onset:
    return Onset(
        check_id="http_5xx_ratio", title="5xx error ratio", unit="percent", level="critical",
        threshold=0.05, at=at, before=0.002, after=0.15,
    )  # fmt: skip


def test_suspects_are_the_changes_just_before_the_onset_nearest_first() -> None:
    onset = onset_at(NOW)
    deploy = Change(at=NOW - timedelta(seconds=100), kind="deploy", label="v2.0.6 deployed", source="engine")
    flag = Change(at=NOW - timedelta(minutes=10), kind="flag", label="RATE_LIMIT_ENABLED=false", source="bot")
    later = Change(at=NOW + timedelta(minutes=1), kind="restart", label="backend restarted", source="engine")
    old = Change(at=NOW - timedelta(hours=2), kind="deploy", label="v2.0.5 deployed", source="engine")
    suspects = rank([onset], [later, old, flag, deploy])
    assert [suspect.change.label for suspect in suspects] == ["v2.0.6 deployed", "RATE_LIMIT_ENABLED=false"]
    said = "v2.0.6 deployed 1 min 40 s before 5xx error ratio rose from 0.2 % to 15 %"
    assert suspects[0].sentence() == said


def test_the_engine_sighting_of_the_bots_own_change_is_one_change() -> None:
    mine = Change(at=NOW, kind="deploy", label="Move backend to v2.0.6 (by the bot)", source="bot")
    seen = Change(at=NOW + timedelta(seconds=3), kind="deploy", label="v2.0.6 deployed", source="engine")
    other = Change(at=NOW + timedelta(minutes=30), kind="deploy", label="v2.0.7 deployed", source="engine")
    assert merge([seen, other, mine]) == [mine, other]


def test_the_way_back_is_offered_only_for_a_deploy_or_flag_with_a_known_command() -> None:
    onset = onset_at(NOW)
    known = Change(
        at=NOW - timedelta(minutes=1), kind="deploy", label="Move backend to v2.0.6 (by the bot)",
        source="bot", way_back_command="rollback", way_back=["v2.0.5"],
    )  # fmt: skip
    report = ChangesReport(
        since=NOW - timedelta(hours=2),
        until=NOW,
        changes=[known],
        onsets=[onset],
        suspects=rank([onset], [known]),
    )
    suspect = report.way_back()
    assert suspect is not None
    [button] = next(block for block in changes_blocks(report) if block["type"] == "actions")["elements"]
    assert button["action_id"] == WAY_BACK_ACTION
    assert read_way_back(button["value"]) == ("rollback", ["v2.0.5"])
    unknown = known.model_copy(update={"way_back_command": None, "way_back": []})
    blind = report.model_copy(update={"suspects": rank([onset], [unknown])})
    assert blind.way_back() is None
    assert not [block for block in changes_blocks(blind) if block["type"] == "actions"]


# --- against the real services ----------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_the_bots_own_changes_come_with_their_way_back() -> None:
    dsn = await recreate_database("chatops_test_changes")
    services = Services.build(make_settings(state_database_url=dsn, environment="test"))
    try:
        await migrate(services.state_db)
        plan = {
            "title": "Move backend to v2.0.6 (from v2.0.5)",
            "current": [],
            "target": [],
            "way_back": ["automatic", "afterwards: /rollback v2.0.5"],
        }
        async with services.state_db.connection() as conn:
            await conn.execute(
                """INSERT INTO approvals (id, command, arguments, environment, requester, request_id, plan,
                       plan_fingerprint, status, expires_at, updated_at)
                   VALUES ($1, 'rollback', '["v2.0.6"]', 'test', 'U0OPS0001', 'r1', $2::jsonb, 'f',
                           'succeeded', now(), now() - interval '3 minutes')""",
                uuid.uuid4(),
                json.dumps(plan),
            )
        now = datetime.now(UTC)
        [change] = await bot_changes(services)(now - timedelta(hours=1), now)
    finally:
        await services.aclose()
    assert (change.kind, change.source) == ("deploy", "bot")
    assert (change.way_back_command, change.way_back) == ("rollback", ["v2.0.5"])
    assert change.label == "Move backend to v2.0.6 (from v2.0.5) (by the bot)"


def test_the_engine_shows_when_the_running_backend_was_deployed(sandbox: SandboxStatus) -> None:
    import asyncio

    async def seen() -> list[Change]:
        services = Services.build(make_settings())
        try:
            return await engine_changes(services)(datetime.now(UTC) - timedelta(days=30), datetime.now(UTC))
        finally:
            await services.aclose()

    changes = asyncio.run(seen())
    deploys = [change for change in changes if change.kind == "deploy"]
    assert deploys and all(change.source == "engine" for change in deploys)
    assert any(label.startswith("v2.0.") and "deployed" in label for label in (c.label for c in deploys))


async def test_a_missing_source_is_named_and_the_rest_still_answered(sandbox: SandboxStatus) -> None:
    checklist = load_checklist(None)

    async def engine_down(start: datetime, end: datetime) -> list[Change]:
        raise ConnectionRefusedError("engine socket refused")

    deploy = Change(
        at=datetime.now(UTC) - timedelta(minutes=5), kind="deploy", label="v2.0.6 deployed", source="engine"
    )

    async def bot(start: datetime, end: datetime) -> list[Change]:
        return [deploy]

    prometheus = PrometheusAdapter(make_settings().prometheus_url, 2.0)
    report = await what_changed(
        prometheus, checklist, [("http_5xx_ratio", "warn")], [("the engine", engine_down), ("the bot", bot)]
    )
    assert report.changes == [deploy]
    assert any(problem.startswith("changes seen by the engine are missing") for problem in report.problems)
    down = PrometheusAdapter("http://127.0.0.1:9", 1.0)
    blind = await what_changed(down, checklist, [("http_5xx_ratio", "warn")], [("the bot", bot)], timeout=1.0)
    assert blind.changes == [deploy] and blind.onsets == []
    assert any(problem.startswith("the onset of") and "Prometheus" in problem for problem in blind.problems)


# --- the window the onsets are read over ---------------------------------------------------------------


class RecordingPrometheus:
    """Answers every range query with a series breached from its 30th point on; records the asks."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float, float]] = []

    async def query_range(
        self, promql: str, start: float, end: float, step: float, timeout: float | None = None
    ) -> RangeResult:
        self.asked.append((promql, start, end, step))
        count = round((end - start) / step) + 1
        points = [(start + index * step, 0.002 if index < count - 3 else 0.2) for index in range(count)]
        return RangeResult(series=[RangeSeries(labels={}, points=points)])


async def test_onsets_are_read_over_the_triages_window_up_to_now_itself() -> None:
    prometheus = RecordingPrometheus()
    now = NOW + timedelta(seconds=7)  # not on a step of the clock
    report = await what_changed(
        prometheus,  # type: ignore[arg-type]
        load_checklist(None),
        [("http_5xx_ratio", "critical")],
        [],
        since=timedelta(seconds=100),  # not a whole number of steps
        now=now,
        window=timedelta(minutes=1),
    )
    [(promql, start, end, step)] = prometheus.asked
    assert "[1m]" in promql and "[5m]" not in promql
    # The last point is now, as the triage saw it; a point every step back from it.
    assert end == now.timestamp() and step == 15 and (end - start) % step == 0
    assert start <= (now - timedelta(seconds=100)).timestamp()
    [onset] = report.onsets
    assert onset.at == now - timedelta(seconds=30)
    # Without a window: the checklist's.
    await what_changed(
        prometheus,
        load_checklist(None),
        [("http_5xx_ratio", "critical")],
        [],
        now=now,  # type: ignore[arg-type]
    )
    assert "[5m]" in prometheus.asked[-1][0]


async def test_onsets_a_dead_prometheus_hid_are_named_once_per_reason() -> None:
    down = PrometheusAdapter("http://127.0.0.1:9", 1.0)
    checks = [("http_5xx_ratio", "critical"), ("http_p95_latency", "warn")]
    report = await what_changed(down, load_checklist(None), checks, [], timeout=1.0)  # type: ignore[arg-type]
    [problem] = report.problems
    assert problem.startswith("the onsets of 5xx error ratio, P95 latency are unknown: Prometheus: ")
