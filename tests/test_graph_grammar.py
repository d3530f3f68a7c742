"""/graph without Prometheus: grammar, Slack text, named checks, the window, the grid, words and marks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from adapters.prometheus import RangeResult, RangeSeries
from bot.cli.main import _take_png
from bot.registry import COMMANDS
from bot.render.graph import sparkline, terminal
from bot.render.picture import describe
from bot.runners.graph import action_marker
from commands import graph
from commands.base import UsageError
from commands.triage_checklist import load_checklist

END = datetime(2026, 11, 1, 14, 5, 7, tzinfo=UTC)


def test_parse_reads_the_target_and_options() -> None:
    args = graph.parse(["5xx", "since=2h", "step=30s"])
    assert (args.target, args.since, args.step, args.unit) == (
        "5xx",
        timedelta(hours=2),
        timedelta(seconds=30),
        None,
    )
    assert graph.parse(["sum", "by", "(le)", "(x)", "unit=seconds"]).target == "sum by (le) (x)"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([], "missing a check (5xx, p95, a triage check id) or a PromQL expression"),
        (["5xx", "since=45d"], "since: `45d` is longer than the maximum of 30d"),
        (
            ["5xx", "since=soon"],
            "since: `soon` is not a duration (use a number and s, m, h or d: 15m, 24h, 7d)",
        ),
        (
            ["5xx", "unit=furlongs"],
            "unit: `furlongs` is not a unit (use percent, ratio, seconds, per_second, count, bytes)",
        ),
        (["5xx", "colour=red"], "unknown option `colour`"),
        (["since=1h"], "missing a check (5xx, p95, a triage check id) or a PromQL expression"),
    ],
)
def test_parse_refuses_with_a_specific_message(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        graph.parse(tokens)
    assert raised.value.message == message
    assert raised.value.usage == graph.USAGE


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("5xx since=2h", ["5xx", "since=2h"]),
        ("since=2h p95", ["p95", "since=2h"]),
        ('rate(x{status=~"5.."}[5m]) since=30m', ['rate(x{status=~"5.."}[5m])', "since=30m"]),
        ("rate(x{status=~“5..”}[5m])", ['rate(x{status=~"5.."}[5m])']),  # Slack's typographic quotes
        ("'up{job=\"api\"}'", ['up{job="api"}']),  # a shell habit: the whole expression quoted
        ('sum by (path) (rate(x{a="b", c="d"}[5m]))', ['sum by (path) (rate(x{a="b", c="d"}[5m]))']),
        ("  ", []),
    ],
)
def test_slack_text_keeps_promql_whole(text: str, tokens: list[str]) -> None:
    assert graph.slack_tokens(text) == tokens


def test_the_registry_uses_the_promql_friendly_split() -> None:
    assert COMMANDS["graph"].tokenize is graph.slack_tokens


def test_named_checks_come_from_the_checklist_with_their_thresholds() -> None:
    checklist = load_checklist()
    five = graph.resolve("5xx", checklist)
    assert five.check_id == "http_5xx_ratio" and five.unit == "percent"
    assert [(item.level, item.value, item.label) for item in five.thresholds] == [
        ("critical", 0.05, "critical 5 %")
    ]
    assert graph.resolve("LATENCY", checklist).check_id == "http_p95_latency"
    # A baseline multiple is resolved to a number: 3x and 10x of 0.3/s.
    hits = graph.resolve("rate_limit_hits", checklist)
    assert [(item.level, round(item.value, 9)) for item in hits.thresholds] == [
        ("warn", 0.9),
        ("critical", 3.0),
    ]
    assert [item.label for item in hits.thresholds] == ["warn 0.9/s", "critical 3/s"]
    # Only PromQL checks can be drawn.
    assert graph.resolve("postgres_connections", checklist).check_id is None


def test_without_a_checklist_the_two_runbook_graphs_remain() -> None:
    assert set(graph.named_targets(None)) == {"http_5xx_ratio", "http_p95_latency"}
    assert graph.resolve("p95", None).thresholds[0].value == 2.0


def test_anything_else_is_promql_with_the_unit_asked_for() -> None:
    target = graph.resolve("up == 0", None, "count")
    assert (target.check_id, target.query, target.unit, target.thresholds) == (None, "up == 0", "count", [])


def test_the_window_is_aligned_on_the_step() -> None:
    window = graph.plan_window(timedelta(hours=1), timedelta(seconds=15), END)
    assert window.end == datetime(2026, 11, 1, 14, 5, 0, tzinfo=UTC)
    assert window.start == datetime(2026, 11, 1, 13, 5, 0, tzinfo=UTC)
    assert len(window.timestamps()) == 241


def test_a_long_window_widens_the_step_to_stay_under_the_point_limit() -> None:
    window = graph.plan_window(timedelta(days=30), timedelta(seconds=15), END)
    assert window.step == timedelta(seconds=1800)
    assert len(window.timestamps()) <= graph.MAX_POINTS + 1
    assert graph.rate_window(None, window.step) == timedelta(hours=1)
    assert graph.rate_window(None, timedelta(seconds=15)) == timedelta(minutes=5)


def _answer(*series: tuple[dict[str, str], list[tuple[float, float]]]) -> RangeResult:
    return RangeResult([RangeSeries(labels, points) for labels, points in series])


def test_nan_infinity_and_missing_samples_are_gaps_on_the_grid() -> None:
    window = graph.plan_window(timedelta(minutes=1), timedelta(seconds=15), END)
    t0 = window.start.timestamp()
    answer = _answer(
        ({"__name__": "x"}, [(t0, 1.0), (t0 + 15, math.nan), (t0 + 30, math.inf), (t0 + 60, 4.0)])
    )
    series, hidden = graph._on_grid(answer, window, "x")
    assert series[0].values == [1.0, None, None, None, 4.0] and hidden == 0
    assert series[0].name == "x"


def test_series_are_named_by_their_differing_labels_and_capped() -> None:
    window = graph.plan_window(timedelta(minutes=1), timedelta(seconds=15), END)
    t0 = window.start.timestamp()
    many = [
        ({"__name__": "x", "job": "api", "path": f"/p{index}"}, [(t0, float(index))])
        for index in range(graph.MAX_SERIES + 2)
    ]
    series, hidden = graph._on_grid(_answer(*many), window, "x")
    assert hidden == 2 and len(series) == graph.MAX_SERIES
    assert [line.name for line in series[:2]] == ["path=/p9", "path=/p8"]  # highest first


def _panel(values: list[float | None], **changes: object) -> graph.GraphData:
    window = graph.plan_window(timedelta(seconds=15 * (len(values) - 1)), timedelta(seconds=15), END)
    panel = graph.GraphData(
        title="5xx error ratio",
        query="q",
        unit="percent",
        start=window.start,
        end=window.end,
        step_seconds=15,
        timestamps=window.timestamps(),
        series=[graph.Series(name="5xx error ratio", values=values)],
        thresholds=[graph.Threshold(level="critical", value=0.05, label="critical 5 %")],
        status="ok",
    )
    return panel.model_copy(update=changes)


def test_peak_last_gaps_and_crossings() -> None:
    panel = _panel([0.01, 0.2, 0.2, None, None, 0.06, 0.01])
    stamps = panel.timestamps
    peak, last = panel.peak(), panel.last()
    assert peak is not None and (peak.at, peak.value) == (stamps[1], 0.2)  # the first time, on a tie
    assert last is not None and (last.at, last.value) == (stamps[6], 0.01)
    assert [(span.start, span.end) for span in panel.gaps()] == [(stamps[3], stamps[4])]
    assert [(span.start, span.end) for span in panel.beyond(panel.thresholds[0])] == [
        (stamps[1], stamps[2]),
        (stamps[5], stamps[5]),
    ]
    assert not panel.critical_now()
    assert _panel([0.01, 0.07]).critical_now()


def test_text_alternative_says_what_the_picture_shows() -> None:
    panel = _panel([0.01, 0.2, None, 0.01])
    text = describe(panel)
    assert text == (
        "5xx error ratio, last 45s to 2026-11-01 14:05 UTC. last 1 % at 14:05 UTC; peak 20 % at 14:04 UTC."
        " above critical 5 % 14:04 UTC. no data 14:04 UTC."
    )
    problem = "Prometheus unreachable (refused): cannot connect to x"
    down = _panel([None, None], series=[], status="unavailable", problem=problem)
    assert describe(down) == f"5xx error ratio, last 15s to 2026-11-01 14:05 UTC. {problem}."


def test_sparkline_draws_gaps_as_blanks_and_marks_values_above_critical() -> None:
    line = graph.Series(name="s", values=[0.0, 1.0, None, 0.5])
    assert sparkline(line) == "▁█ ▅"
    assert sparkline(line, critical=0.9) == "▁[red]█[/] ▅"
    assert sparkline(graph.Series(name="flat", values=[2.0, 2.0])) == "▄▄"
    assert sparkline(graph.Series(name="empty", values=[None, None])) == "  "


def test_terminal_prints_figures_thresholds_gaps_and_marks() -> None:
    marker = graph.Marker(at=END - timedelta(seconds=30), kind="rollback", label="rollback v2.0.5")
    panel = _panel([0.01, 0.2, None, 0.01], markers=[marker])
    console = Console(record=True, width=200, color_system=None)
    terminal(graph.GraphReport(panels=[panel]), console)
    lines = console.export_text().splitlines()
    assert lines[0] == "5xx error ratio last 45s to 2026-11-01 14:05 UTC"
    assert lines[1] == "  5xx error ratio  ▁█ ▁  min 1 %  max 20 %  last 1 %"
    assert "  critical 5 %: above 14:04 UTC" in lines
    assert "  no data 14:04 UTC" in lines
    assert "  │ rollback v2.0.5 at 14:04 UTC" in lines


def test_actions_are_labelled_for_people() -> None:
    at = END
    assert action_marker(
        {"at": at, "action": "rollback", "arguments": "v2.0.5", "outcome": "succeeded"}
    ) == graph.Marker(at=at, kind="rollback", label="rollback v2.0.5")
    flag = action_marker(
        {"at": at, "action": "rollback", "arguments": "flag MFA_ENABLED=false", "outcome": None}
    )
    assert (flag.kind, flag.label) == ("flag", "flag MFA_ENABLED=false")
    failed = action_marker({"at": at, "action": "restart", "arguments": "backend", "outcome": "failed"})
    assert (failed.kind, failed.label) == ("restart", "restart backend (failed)")


async def test_a_failing_marker_source_leaves_a_note_and_the_others_still_count() -> None:
    start, end = END - timedelta(hours=1), END

    async def good(since: datetime, until: datetime) -> list[graph.Marker]:
        return [
            graph.Marker(at=END - timedelta(minutes=5), kind="alert", label="b"),
            graph.Marker(at=END - timedelta(minutes=50), kind="alert", label="a"),
            graph.Marker(at=END - timedelta(hours=2), kind="alert", label="too early"),
        ]

    async def broken(since: datetime, until: datetime) -> list[graph.Marker]:
        raise ConnectionRefusedError

    markers, notes = await graph.collect_markers([good, broken], start, end, timeout=1.0)
    assert [marker.label for marker in markers] == ["a", "b"]
    assert notes == ["some actions may be missing: refused: connection refused"]


@pytest.mark.parametrize(
    ("argv", "rest", "file"),
    [
        (["graph", "5xx", "--png", "out.png"], ["graph", "5xx"], "out.png"),
        (["graph", "--png=out.png", "5xx"], ["graph", "5xx"], "out.png"),
        (["graph", "5xx", "--png"], ["graph", "5xx"], ""),
        (["graph", "5xx"], ["graph", "5xx"], None),
    ],
)
def test_the_cli_takes_png_file_out_of_the_arguments(
    argv: list[str], rest: list[str], file: str | None
) -> None:
    assert _take_png(argv) == (rest, file)
