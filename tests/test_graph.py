"""/graph against a real Prometheus holding backfilled history of a known shape (tests/graph_helpers.py).

The Prometheus is this module's own (own port, own data directory), so the sandbox's is untouched.
The bot's actions come from audit-trail rows written by `AuditTrail.append` at chosen times.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image

from adapters.postgres import PostgresAdapter
from bot.cli.main import run_command
from bot.gate import audit_trail
from bot.gate.audit_trail import TrailEntry
from bot.registry import COMMANDS
from bot.render.picture import describe, describe_report, render, render_png
from bot.runners import graph as graph_runner
from bot.services import Services
from bot.state import migrate
from commands import graph
from commands.base import UsageError
from sandbox.prometheus import backfill_prometheus, stop_prometheus
from tests.conftest import make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.graph_helpers import (
    NORMAL_ERRORS,
    NORMAL_P95,
    SPIKE_ERRORS,
    SPIKE_P95,
    History,
    aligned_now,
    gauge_value,
    openmetrics,
)
from tests.netutil import free_port
from tests.test_slack_app import CHANNEL, USER, post_command, running_bot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOUR = timedelta(hours=1)
STEP = timedelta(seconds=15)

# (minutes before the end of the history, what the bot recorded). Only executed actions are marks.
ACTIONS: list[tuple[float, TrailEntry]] = [
    (180, TrailEntry(action="drill", decision="executed", outcome="succeeded", arguments="")),
    (
        38,
        TrailEntry(
            action="rollback",
            decision="executed",
            outcome="succeeded",
            arguments="flag RATE_LIMIT_ENABLED=false",
        ),
    ),
    (36, TrailEntry(action="restore", decision="requested", arguments="20261101T0000Z")),
    (32, TrailEntry(action="rollback", decision="executed", outcome="succeeded", arguments="v2.0.5")),
    (10, TrailEntry(action="restart", decision="executed", outcome="failed", arguments="backend")),
]
# (minutes before the end, kind, label) of every marker the last hour must show, in order.
EXPECTED_MARKERS = [
    (44, "alert", "alert HighErrorRate firing (critical)"),
    (38, "flag", "flag RATE_LIMIT_ENABLED=false"),
    (32, "rollback", "rollback v2.0.5"),
    (28, "alert", "alert HighErrorRate resolved"),
    (10, "restart", "restart backend (failed)"),
]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Backfill the known history into a Prometheus of this module's own, started for it."""
    root = tmp_path_factory.mktemp("graph-prometheus")
    end = aligned_now()
    settings = make_settings(
        sandbox_dir=root,
        prometheus_url=f"http://127.0.0.1:{free_port()}",
        # Nothing to scrape: the history is all this Prometheus holds.
        api_url=f"http://127.0.0.1:{free_port()}",
    )
    backfill_prometheus(settings, openmetrics(end))
    try:
        yield History(url=settings.prometheus_url, end=end, data_dir=root)
    finally:
        stop_prometheus(settings)


class _Clock(datetime):
    """Stands in for `datetime` inside bot.gate.audit_trail, so rows are written at chosen times."""

    moment: datetime = datetime.now(UTC)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.moment


@pytest.fixture(scope="module")
async def state_dsn(history: History, postgres: str) -> str:
    """The bot's state database with the actions above in its audit trail and one alert."""
    dsn = await recreate_database("chatops_test_graph")
    state_db = PostgresAdapter("state-db", dsn, 5.0)
    try:
        await migrate(state_db)
        # Keyed like the bot's, anchored nowhere: these tests read the rows, not their anchors.
        trail = audit_trail.AuditTrail(state_db, audit_trail.trail_key("graph-test-key"), None, "test")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(audit_trail, "datetime", _Clock)
            for minutes, entry in ACTIONS:
                _Clock.moment = history.at(minutes)
                await trail.append(entry)
        assert (await trail.verify()).ok  # the chain is intact: real appends
        async with state_db.connection() as conn:
            await conn.execute(
                """INSERT INTO alert_messages (fingerprint, channel_id, ts, status, alertname, starts_at,
                       ends_at, alert)
                   VALUES ('abc123', 'C0INCIDENT', '1.000', 'resolved', 'HighErrorRate',
                       $1, $2, $3::jsonb)""",
                history.at(44),
                history.at(28),
                json.dumps({"labels": {"alertname": "HighErrorRate", "severity": "critical"}}),
            )
    finally:
        await state_db.aclose()
    return dsn


@pytest.fixture
async def services(history: History, state_dsn: str) -> AsyncIterator[Services]:
    built = Services.build(make_settings(prometheus_url=history.url, state_database_url=state_dsn))
    try:
        yield built
    finally:
        await built.aclose()


async def draw(services: Services, history: History, text: str) -> graph.GraphReport:
    """Run /graph as Slack would pass `text`, for the hour ending where the history ends."""
    return await graph.run(
        graph.parse(graph.slack_tokens(text)),
        services.prometheus,
        graph_runner.checklist_of(services),
        graph_runner.marker_sources(services),
        default_since=HOUR,
        resolution=STEP,
        timeout=5.0,
        end=history.end,
    )


def value_at(panel: graph.GraphData, history: History, minutes: float, series: int = 0) -> float | None:
    return panel.series[series].values[panel.timestamps.index(history.at(minutes))]


def minutes_range(first: float, last: float) -> list[float]:
    """Every grid time from `first` down to `last` minutes before the end, both included."""
    count = round((first - last) * 4)
    return [first - index / 4 for index in range(count + 1)]


# --- the data behind the picture -------------------------------------------------------------------


async def test_5xx_ratio_matches_the_known_series(services: Services, history: History) -> None:
    report = await draw(services, history, "5xx")
    (panel,) = report.panels
    assert panel.status == "ok" and panel.check_id == "http_5xx_ratio"
    assert panel.timestamps == [history.at(60) + index * STEP for index in range(241)]
    assert panel.start == history.at(60) and panel.end == history.end and panel.step_seconds == 15
    # Wherever the 5-minute rate window lies inside one phase, the ratio is that phase's exactly.
    for minutes in minutes_range(60, 46) + minutes_range(25, 21) + minutes_range(9, 0):
        assert value_at(panel, history, minutes) == pytest.approx(NORMAL_ERRORS, rel=1e-9), minutes
    for minutes in minutes_range(40, 30):
        assert value_at(panel, history, minutes) == pytest.approx(SPIKE_ERRORS, rel=1e-9), minutes
    # No requests at all: 0/0 is NaN in Prometheus, a gap here, never a zero.
    for minutes in minutes_range(15, 14):
        assert value_at(panel, history, minutes) is None, minutes
    assert [(gap.start, gap.end) for gap in panel.gaps()] == [(history.at(15), history.at(14))]
    peak, last = panel.peak(), panel.last()
    assert peak is not None and peak.value == pytest.approx(SPIKE_ERRORS)
    assert history.at(40) <= peak.at <= history.at(30)
    assert last is not None and last.at == history.end and last.value == pytest.approx(NORMAL_ERRORS)


async def test_p95_latency_matches_the_known_series(services: Services, history: History) -> None:
    (panel,) = (await draw(services, history, "p95")).panels
    assert panel.check_id == "http_p95_latency" and panel.unit == "seconds"
    for minutes in minutes_range(60, 46) + minutes_range(25, 21) + minutes_range(9, 0):
        assert value_at(panel, history, minutes) == pytest.approx(NORMAL_P95, rel=1e-9), minutes
    for minutes in minutes_range(40, 30):
        assert value_at(panel, history, minutes) == pytest.approx(SPIKE_P95, rel=1e-9), minutes
    for minutes in minutes_range(15, 14):
        assert value_at(panel, history, minutes) is None, minutes


async def test_thresholds_are_the_runbooks_and_crossings_are_found(
    services: Services, history: History
) -> None:
    report = await graph.key_metrics(
        services.prometheus,
        graph_runner.checklist_of(services),
        graph_runner.marker_sources(services),
        since=HOUR,
        resolution=STEP,
        timeout=5.0,
        end=history.end,
    )
    errors, latency = report.panels
    assert [(item.level, item.value, item.label) for item in errors.thresholds] == [
        ("critical", 0.05, "critical 5 %")
    ]
    assert [(item.level, item.value, item.label) for item in latency.thresholds] == [
        ("critical", 2.0, "critical 2 s")
    ]
    for panel in (errors, latency):
        (span,) = panel.beyond(panel.thresholds[0])
        # Above from when the spike fills enough of the rate window until it has left it.
        assert history.at(45) < span.start <= history.at(40)
        assert history.at(30) <= span.end < history.at(25)
    assert report.ok  # now back to normal


async def test_actions_and_alerts_are_marked_at_their_times(services: Services, history: History) -> None:
    (panel,) = (await draw(services, history, "5xx")).panels
    assert [(marker.at, marker.kind, marker.label) for marker in panel.markers] == [
        (history.at(minutes), kind, label) for minutes, kind, label in EXPECTED_MARKERS
    ]
    assert panel.notes == []


async def test_raw_promql_keeps_every_value_nan_and_missing_samples_are_gaps(
    services: Services, history: History
) -> None:
    (panel,) = (await draw(services, history, 'chatops_test_gauge{shard="a"} unit=count')).panels
    assert panel.check_id is None and panel.query == 'chatops_test_gauge{shard="a"}'
    last_before_gap = gauge_value(30.25)
    for index, at in enumerate(panel.timestamps):
        minutes = (history.end - at) / timedelta(minutes=1)
        written = gauge_value(minutes)
        value = panel.series[0].values[index]
        if written is None:
            # No sample: Prometheus looks back 5 minutes for one, then there is none.
            if minutes > 25.5:
                assert value == last_before_gap, minutes
            elif minutes < 24.5:
                assert value is None, minutes
        elif written != written:  # NaN written: a gap, not a zero
            assert value is None, minutes
        else:
            assert value == written, minutes
    gaps = [(gap.start, gap.end) for gap in panel.gaps()]
    assert (history.at(50), history.at(49.75)) in gaps
    assert any(start <= history.at(24) and end == history.at(22.25) for start, end in gaps)


async def test_several_series_are_named_by_what_tells_them_apart(
    services: Services, history: History
) -> None:
    (panel,) = (await draw(services, history, "chatops_test_gauge")).panels
    assert [line.name for line in panel.series] == ["shard=b", "shard=a"]  # highest first
    assert value_at(panel, history, 0, series=0) == 2 * value_at(panel, history, 0, series=1)  # type: ignore[operator]


# --- the picture --------------------------------------------------------------------------------------


def clock_time(history: History, hhmm: str) -> datetime:
    """Return the moment an HH:MM in the text means: the latest such time at or before the end."""
    hour, minute = map(int, hhmm.split(":"))
    moment = history.end.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moment - timedelta(days=1) if moment > history.end else moment


async def test_the_picture_is_a_png_with_its_text_alternative(services: Services, history: History) -> None:
    report = await render(await draw(services, history, "5xx since=1h"))
    assert report.png is not None and report.png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(report.png)) as image:
        assert image.format == "PNG" and image.size[0] == 1100 and 350 < image.size[1] < 500
    end = f"{history.end:%H:%M}"
    peak = report.panels[0].peak()
    assert peak is not None
    text = describe_report(report)
    assert text.startswith(f"5xx error ratio, last 1h to {history.end:%Y-%m-%d} {end} UTC.")
    assert f"last 1 % at {end} UTC" in text
    assert f"peak 20 % at {peak.at:%H:%M} UTC" in text
    # The spike (45 to 30 minutes before the end) makes the one run above 5 %: it starts once the
    # rate's window holds enough of the spike (with a 5m window, 1 % -> 20 % crosses 5 % after about
    # 75 s, plus up to one 15 s step: 10:35 for a spike from 10:33:45 once happened) and lasts while
    # the window still holds it, never into the quiet spell (at 20). The hour may change inside it
    # (it once did: 08:55–09:10).
    above = re.search(r"above critical 5 % (\d\d:\d\d)–(\d\d:\d\d) UTC", text)
    assert above is not None, text
    start, stop = (clock_time(history, hhmm) for hhmm in above.groups())
    assert history.at(46) <= start <= history.at(43.5) and history.at(31) <= stop <= history.at(20), text
    assert f"no data {history.at(15):%H:%M}–{history.at(14):%H:%M} UTC" in text
    assert f"rollback v2.0.5 at {history.at(32):%H:%M}" in text
    # The picture is the JSON's too: the data, without the bytes.
    dumped = json.loads(report.model_dump_json())
    assert "png" not in dumped and len(dumped["panels"][0]["timestamps"]) == 241


async def test_key_metrics_upload_has_two_panels(services: Services, history: History) -> None:
    upload = await graph_runner.key_metrics_upload(services, since=HOUR, end=history.end)
    assert upload.filename == f"graph-key-metrics-{history.end:%Y%m%dT%H%MZ}.png"
    assert upload.content.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(upload.content)) as image:
        assert image.size[0] == 1100 and image.size[1] > 800
    assert (
        upload.alt_text.startswith("5xx error ratio, last 1h") and " P95 latency, last 1h" in upload.alt_text
    )
    assert "peak 3.9 s at" in upload.alt_text
    assert upload.title == f"5xx error ratio and P95 latency, last 1h to {history.end:%Y-%m-%d %H:%M} UTC"


async def test_an_hour_at_15_seconds_is_drawn_whole(services: Services, history: History) -> None:
    """Every sample of the hour reaches the picture (how long it takes to draw: triage_bench)."""
    report = await graph.key_metrics(
        services.prometheus, None, [], since=HOUR, resolution=STEP, timeout=5.0, end=history.end
    )
    assert [len(panel.timestamps) for panel in report.panels] == [241, 241]
    assert all(len(line.values) == 241 for panel in report.panels for line in panel.series)
    png = render_png(report.panels)
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] == 1100 and image.size[1] > 800


# --- what goes wrong -------------------------------------------------------------------------------------


async def test_invalid_promql_gets_prometheuss_own_error(services: Services, history: History) -> None:
    expression = "rate(http_requests_total[5m]"
    answer = httpx.get(
        f"{history.url}/api/v1/query_range",
        params={"query": expression, "start": 0, "end": 60, "step": 15},
        timeout=5,
    ).json()
    assert answer["errorType"] == "bad_data"
    with pytest.raises(UsageError) as raised:
        await draw(services, history, expression)
    assert raised.value.message == f"Prometheus rejected the expression: {answer['error']}"
    assert raised.value.usage == graph.USAGE


async def test_label_quotes_lost_to_the_shell_get_a_hint(services: Services, history: History) -> None:
    with pytest.raises(UsageError) as raised:
        await draw(services, history, "up{job=api}")
    assert raised.value.message.startswith("Prometheus rejected the expression: ")
    assert raised.value.message.endswith(
        "Put the whole expression in single quotes: 'up{job=\"3dpot-backend\"}')"
    )


async def test_unreachable_prometheus_is_said_in_the_picture(history: History, state_dsn: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    services = Services.build(make_settings(prometheus_url=dead, state_database_url=state_dsn))
    try:
        report = await render(await draw(services, history, "5xx"))
    finally:
        await services.aclose()
    (panel,) = report.panels
    assert panel.status == "unavailable" and panel.series == []
    assert panel.problem == f"Prometheus unreachable (refused): cannot connect to {dead}"
    assert report.png is not None and report.png.startswith(PNG_SIGNATURE)
    assert not report.ok
    # The actions are still shown: they come from the bot's own database.
    assert len(panel.markers) == len(EXPECTED_MARKERS)
    assert describe(panel).startswith(f"5xx error ratio, last 1h to {history.end:%Y-%m-%d %H:%M} UTC. ")
    assert f"Prometheus unreachable (refused): cannot connect to {dead}." in describe(panel)


async def test_no_data_is_said_not_failed(services: Services, history: History) -> None:
    report = await render(await draw(services, history, "no_such_metric_total"))
    (panel,) = report.panels
    assert panel.status == "no_data" and panel.series == [] and report.png is not None
    assert "no data in this window" in describe(panel)


async def test_unreachable_state_database_leaves_a_note_not_a_failure(history: History) -> None:
    dead_db = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    services = Services.build(make_settings(prometheus_url=history.url, state_database_url=dead_db))
    try:
        report = await render(await draw(services, history, "5xx"))
    finally:
        await services.aclose()
    (panel,) = report.panels
    assert panel.status == "ok" and panel.markers == []
    assert len(panel.notes) == 2 and all(
        note.startswith("some actions may be missing: refused") for note in panel.notes
    )


# --- Slack and the terminal ---------------------------------------------------------------------------


async def test_graph_in_slack_uploads_the_picture_into_the_thread(
    history: History, state_dsn: str, fake_slack: FakeSlack
) -> None:
    async with running_bot(fake_slack, prometheus_url=history.url, state_database_url=state_dsn) as (url, _):
        # Typed in Slack: quotes become typographic, and PromQL's own quotes must survive.
        text = "sum(rate(http_requests_total{status=~“5..”}[5m])) since=2h unit=per_second"
        assert (await post_command(url, "/graph", text)).status_code == 200
        posted = await fake_slack.wait_for_call_async("chat.postMessage", timeout=20)
        completed = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
    reserved = fake_slack.calls_to("files.getUploadURLExternal")
    assert len(reserved) == 1
    methods = [call.method for call in fake_slack.calls if call.method != "auth.test"]
    assert methods == ["chat.postMessage", "files.getUploadURLExternal", "files.completeUploadExternal"]
    (entry,) = completed.params["files"]
    stored = fake_slack.files[entry["id"]]
    assert stored.completed and stored.content is not None and stored.content.startswith(PNG_SIGNATURE)
    assert stored.channels == [CHANNEL] and stored.thread_ts == posted.response["ts"]  # type: ignore[index]
    assert stored.filename.startswith("graph-promql-") and stored.filename.endswith(".png")
    alt = reserved[0].params["alt_txt"]
    assert alt == posted.params["text"]  # the same words for notifications and screen readers
    assert alt.startswith('sum(rate(http_requests_total{status=~"5.."}[5m])), last 2h to ')
    assert "peak 2/s at" in alt and "marked: alert HighErrorRate firing (critical) at" in alt
    assert int(reserved[0].params["length"]) == len(stored.content)


async def test_invalid_promql_in_slack_goes_to_the_caller_with_prometheuss_words(
    history: History, state_dsn: str, fake_slack: FakeSlack
) -> None:
    async with running_bot(fake_slack, prometheus_url=history.url, state_database_url=state_dsn) as (url, _):
        await post_command(url, "/graph", "sum(rate(http_requests_total[5m])")
        call = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=20)
    assert "Prometheus rejected the expression: " in call.params["text"]
    assert "parse error: unclosed left parenthesis" in call.params["text"]
    assert fake_slack.calls_to("files.getUploadURLExternal") == []


async def test_terminal_sparkline_and_png_file(
    history: History, state_dsn: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(prometheus_url=history.url, state_database_url=state_dsn)
    target = tmp_path / "p95.png"
    code = await run_command(settings, "graph", ["p95", "since=2h"], as_json=False, png_file=str(target))
    out, err = capsys.readouterr()
    assert code == 0
    assert target.read_bytes().startswith(PNG_SIGNATURE)
    assert f"wrote {target}" in err
    lines = out.splitlines()
    assert lines[0].startswith("P95 latency last 2h to ")
    # min, max and last of the series; the quiet minutes are blanks in the sparkline.
    assert "min 975 ms  max 3.9 s  last" in lines[1]
    assert any(bar in lines[1] for bar in "▁▂▃▄▅▆▇█")
    assert "critical 2 s: above" in out and "rollback v2.0.5 at" in out


@pytest.mark.usefixtures("redis")
async def test_terminal_json_keeps_the_data_and_png_needs_a_picture(
    history: History, state_dsn: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(prometheus_url=history.url, state_database_url=state_dsn)
    assert await run_command(settings, "graph", ["5xx"], as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    (panel,) = data["panels"]
    assert panel["status"] == "ok" and len(panel["series"][0]["values"]) == len(panel["timestamps"])
    code = await run_command(settings, "health", [], as_json=True, png_file=str(tmp_path / "x.png"))
    assert code == 2 and "draws no picture" in capsys.readouterr().err


# --- who may graph what -------------------------------------------------------------------------------


async def test_promql_from_slack_needs_the_responder_role_named_graphs_do_not(
    history: History, state_dsn: str, fake_slack: FakeSlack
) -> None:
    # USER is a viewer only: someone else is the responder.
    roles = {"viewers": ["*"], "responders": ["U0RESPOND1"]}
    async with running_bot(fake_slack, prometheus_url=history.url, state_database_url=state_dsn, **roles) as (
        url,
        _,
    ):
        await post_command(url, "/graph", 'count by (job) (up{job=~".+"}) since=2h')
        refusal = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=20)
        refused_posts = len(fake_slack.calls_to("chat.postMessage"))
        await post_command(url, "/graph", "auth_failures since=2h")  # a PromQL check of the checklist
        completed = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
    text = refusal.params["text"]
    assert refusal.params["user"] == USER
    assert "you are not allowed to run /graph: a PromQL expression needs the responder role" in text
    assert "(5xx, p95, a check id of the triage checklist) need only a viewer" in text
    assert refused_posts == 0
    stored = fake_slack.files[completed.params["files"][0]["id"]]
    assert stored.filename.startswith("graph-auth-failures-")


async def test_promql_from_slack_is_drawn_for_a_responder(
    history: History, state_dsn: str, fake_slack: FakeSlack
) -> None:
    roles = {"viewers": ["*"], "responders": [USER]}
    async with running_bot(fake_slack, prometheus_url=history.url, state_database_url=state_dsn, **roles) as (
        url,
        _,
    ):
        await post_command(url, "/graph", "sum(rate(http_requests_total[5m])) since=2h")
        completed = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=20)
    stored = fake_slack.files[completed.params["files"][0]["id"]]
    assert stored.filename.startswith("graph-promql-") and fake_slack.calls_to("chat.postEphemeral") == []


@pytest.mark.parametrize(
    ("text", "settings", "role"),
    [
        ("5xx", {}, "viewer"),
        ("P95 since=6h", {}, "viewer"),
        ("latency", {}, "viewer"),
        ("auth_failures", {}, "viewer"),  # a PromQL check of the shipped checklist
        ("up", {}, "responder"),
        ('sum(rate(http_requests_total{status=~"5.."}[5m]))', {}, "responder"),
        ("up", {"promql_role": "viewer"}, "viewer"),
        ("up", {"promql_role": "operator"}, "operator"),
        ("5xx", {"promql_role": "operator"}, "viewer"),
    ],
)
def test_the_settings_decide_who_may_graph_promql(text: str, settings: dict[str, Any], role: str) -> None:
    spec = COMMANDS["graph"]
    assert spec.requirement(spec.tokenize(text), make_settings(**settings)).role == role
