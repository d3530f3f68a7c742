"""/triage's argument grammar (with Hypothesis) and its checklist file's validation."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, load_settings
from commands.base import UsageError, format_duration, tokenize
from commands.triage import (
    MAX_LOGS_LIMIT,
    USAGE,
    LogsArgs,
    LookupArgs,
    TriageArgs,
    TriageCommand,
    parse,
    parse_trace_id,
    unparse,
)
from commands.triage_checklist import (
    DEFAULT_CHECKLIST,
    ChecklistError,
    PromqlCheck,
    load_checklist,
    parse_checklist,
    render_query,
)

REPO = Path(__file__).resolve().parents[1]
HEX = "0123456789abcdef"
LEVELS = ["debug", "info", "warning", "error", "critical"]

# --- strategies -----------------------------------------------------------------------------

durations = st.builds(
    lambda amount, unit: timedelta(**{unit: amount}),
    st.integers(min_value=1, max_value=24),
    st.sampled_from(["minutes", "hours"]),
)
windows = st.one_of(st.none(), durations, st.integers(10, 3600).map(lambda s: timedelta(seconds=s)))
# Ids as platforms write them: any token of printable characters but spaces and quotes (one that
# reads as an option, `name=value`, is an option).
_ID_CHARS = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
    blacklist_characters="'\"`‘’‚‛“”„‟‹›«»",
)
any_ids = st.text(_ID_CHARS, min_size=1, max_size=40).filter(
    lambda text: not re.match(r"^(--)?[a-z][a-z0-9_-]*=", text)
)
trace_ids = st.one_of(
    st.text(HEX, min_size=32, max_size=32).filter(lambda text: set(text) != {"0"}),
    any_ids.filter(lambda text: parse_trace_id(text) == text),
)
request_ids = any_ids
paths = st.from_regex(r"\A/[a-z0-9/_.-]{0,30}\Z")
commands: st.SearchStrategy[TriageCommand] = st.one_of(
    st.builds(TriageArgs, window=windows),
    st.builds(LookupArgs, kind=st.just("trace"), id=trace_ids),
    st.builds(LookupArgs, kind=st.just("request"), id=request_ids),
    st.builds(
        LogsArgs,
        level=st.one_of(st.none(), st.sampled_from(LEVELS)),
        path=st.one_of(st.none(), paths),
        since=durations,
        limit=st.integers(1, MAX_LOGS_LIMIT),
    ),
)


# --- grammar --------------------------------------------------------------------------------


@given(commands)
def test_every_command_reads_back_the_same_from_argv_and_from_slack_text(command: TriageCommand) -> None:
    tokens = unparse(command)
    assert parse(tokens) == command
    assert parse(tokenize(" ".join(shlex.quote(token) for token in tokens))) == command


@given(st.lists(st.text(max_size=40), max_size=6))
@settings(max_examples=500)
def test_any_tokens_either_parse_or_give_a_usage_error(tokens: list[str]) -> None:
    try:
        parse(tokens)
    except UsageError as error:
        assert error.message
        assert error.usage == USAGE


@given(st.text(max_size=200).filter(lambda text: not re.match(r"^\s*(--)?[a-z][a-z0-9_-]*=", text)))
def test_any_text_is_an_id_or_refused_naming_why(text: str) -> None:
    for kind in ("trace", "request"):
        try:
            parsed = parse([kind, text])
        except UsageError as error:
            assert (error.message.startswith("`") and f"is not a {kind} id: " in error.message) or (
                error.message == f"a {kind} id is empty"
            )
            continue
        assert isinstance(parsed, LookupArgs) and parsed.kind == kind
        assert 0 < len(parsed.id) <= 128 and not any(char.isspace() for char in parsed.id)


# As platforms write them; a header gives the trace id it carries.
ACCEPTED = [
    ("request", "req-4242424", "req-4242424"),
    ("request", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),  # ULID
    ("request", "5f0c3c1e-9d1b-4c6e-8f3a-0d2b7e6a9c41", "5f0c3c1e-9d1b-4c6e-8f3a-0d2b7e6a9c41"),
    ("request", "x", "x"),
    ("request", "req_1%", "req_1%"),
    ("request", " a.*b ", "a.*b"),
    ("trace", "1-5759e988-bd862e3fe1be46a994272793", "1-5759e988-bd862e3fe1be46a994272793"),  # X-Ray
    ("trace", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
     "1-5759e988-bd862e3fe1be46a994272793"),
    ("trace", "00f067aa0ba902b7", "00f067aa0ba902b7"),  # 16 hex
    ("trace", "4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4736"),  # W3C: lower case
    ("trace", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("trace", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("trace", "t" * 128, "t" * 128),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "typed", "id_"), ACCEPTED)
def test_ids_as_platforms_write_them(kind: str, typed: str, id_: str) -> None:
    assert parse([kind, typed]) == LookupArgs(kind=kind, id=id_)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("a b", "it contains a space, and an id is one word"),
        ("a\u3000b", "it contains a space"),
        ("ab'c", "it contains a quote (')"),
        ('ab"c', 'it contains a quote (")'),
        ("ab`c", "it contains a quote (`)"),
        ("„abc“", "it contains a quote („)"),
        ("ab\nc", "it contains a control or invisible character (U+000A)"),
        ("ab\x7fc", "it contains a control or invisible character (U+007F)"),
        ("ab\u2066c", "it contains a control or invisible character (LEFT-TO-RIGHT ISOLATE)"),
        ("x" * 129, "it is 129 characters long, and an id has at most 128"),
    ],
)
def test_what_cannot_be_an_id_is_refused_naming_why(typed: str, why: str) -> None:
    for kind in ("trace", "request"):
        with pytest.raises(UsageError) as caught:
            parse([kind, typed])
        assert f"is not a {kind} id: {why}" in caught.value.message
        assert caught.value.usage == USAGE


def test_the_all_zero_trace_id_is_refused() -> None:
    with pytest.raises(UsageError, match="W3C calls the all-zero trace id invalid"):
        parse(["trace", "0" * 32])


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["bogus"], "unknown subcommand `bogus`"),
        (["colour=red"], "unknown option `colour`"),
        (["window=soon"], "window: `soon` is not a duration"),
        (["window=5s"], "shorter than the minimum of 10s"),
        (["window=2d"], "longer than the maximum of 1d"),
        (["trace"], "missing trace id"),
        (["trace", "ab'c"], "`ab'c` is not a trace id: it contains a quote"),
        (["trace", "4bf92f3577b34da6a3ce929d0e0e4736", "extra"], "unexpected argument `extra`"),
        (["request", "a b"], "is not a request id"),
        (["request", "r" * 200], "is not a request id: it is 200 characters long"),
        (["logs", "loud"], "`loud` is neither a level"),
        (["logs", "error", "warning"], "level given twice"),
        (["logs", "/a", "/b"], "path given twice"),
        (["logs", "since=forever"], "since: `forever` is not a duration"),
        (["logs", "since=31d"], "longer than the maximum of 30d"),
        (["logs", "limit=0"], "limit: 0 is outside 1..500"),
        (["logs", "limit=many"], "limit: `many` is not a whole number"),
        (["logs", "level=error"], "unknown option `level`"),
    ],
)
def test_bad_input_gets_a_specific_message_and_the_usage(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(tokens)
    assert message in caught.value.message
    assert caught.value.usage == USAGE


def test_logs_reads_level_and_path_in_any_order_with_defaults() -> None:
    assert parse(["logs"]) == LogsArgs()
    assert parse(["logs", "/api/v1/projects", "WARN", "since=1h", "limit=5"]) == LogsArgs(
        level="warning", path="/api/v1/projects", since=timedelta(hours=1), limit=5
    )
    assert parse(tokenize("logs error --since=30m")) == LogsArgs(level="error", since=timedelta(minutes=30))


def test_triage_window_option() -> None:
    assert parse([]) == TriageArgs()
    assert parse(["window=15m"]) == TriageArgs(window=timedelta(minutes=15))
    assert format_duration(timedelta(seconds=30)) == "30s"


@pytest.mark.usefixtures("postgres")  # the CLI records its run, usage errors too
def test_cli_bad_subcommand_and_trace_exit_2_with_usage() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "bot", "triage", "bogus"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert bad.returncode == 2
    assert "unknown subcommand 'bogus'" in bad.stderr and "usage: chatops triage" in bad.stderr
    trace = subprocess.run(
        [sys.executable, "-m", "bot", "triage", "trace", "x y"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert trace.returncode == 2
    assert "'x y' is not a trace id: it contains a space" in trace.stderr


# --- the checklist file ---------------------------------------------------------------------


def test_shipped_checklist_covers_the_runbook() -> None:
    checklist = load_checklist()
    by_id = {check.id: check for check in checklist.checks}
    # The queries (the 5xx ratio reads 0, not nothing, before the first 5xx).
    ratio = by_id["http_5xx_ratio"]
    assert isinstance(ratio, PromqlCheck)
    assert render_query(ratio.query, timedelta(minutes=5)) == (
        '(sum(rate(http_requests_total{status=~"5.."}[5m])) or vector(0))'
        " / sum(rate(http_requests_total[5m]))"
    )
    assert ratio.threshold("critical") == 0.05
    p95 = by_id["http_p95_latency"]
    assert isinstance(p95, PromqlCheck)
    assert render_query(p95.query, timedelta(minutes=5)) == (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"
    )
    assert p95.threshold("critical") == 2
    assert by_id["postgres_connections"].threshold("warn") == 0.8
    kinds = {check.kind for check in checklist.checks}
    assert kinds >= {"promql", "postgres_slow_queries", "postgres_locks", "redis_memory", "storage"}
    assert kinds >= {"containers", "clock", "logs", "audit"}
    # The runbook's troubleshooting section, each problem with its advice.
    for key in (
        "database_connection_failed",
        "redis_timeout",
        "mfa_codes_not_working",
        "storage_full",
        "high_cpu",
    ):
        assert checklist.advice[key].steps, key
    assert "ntpdate pool.ntp.org" in " ".join(checklist.advice["mfa_codes_not_working"].steps)
    assert "mfa_codes_not_working" in by_id["clock_skew"].advice


def test_baseline_multiples_resolve() -> None:
    checklist = load_checklist()
    auth = next(check for check in checklist.checks if check.id == "auth_failures")
    assert auth.baseline == 0.5
    assert auth.threshold("warn") == pytest.approx(1.0)
    assert auth.threshold("critical") == pytest.approx(2.5)


ONE_CHECK = "checks:\n  - id: x\n    title: X\n    kind: promql\n    query: up\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("checks: []\n", "checks: List should have at least 1 item"),
        (ONE_CHECK + "    critcal: 2\n", "line 6: check #1 `x`: critcal: unknown key (a typo?)"),
        (
            ONE_CHECK + "    critical: 3x\n",
            "critical is a multiple of the baseline but the check has no `baseline`",
        ),
        (
            ONE_CHECK + "    warn: 5\n    critical: 2\n",
            "line 2: check #1 `x`: warn (5) is above critical (2)",
        ),
        (ONE_CHECK + "    critical: lots\n", "`lots` is not a number nor a multiple of the baseline"),
        (ONE_CHECK + "    advice: [nope]\n", "check #1 `x`: advice `nope` is not defined"),
        (
            ONE_CHECK.replace("query: up", "query: rate(x[$win])"),
            "line 5: check #1 `x`: query: unknown placeholder",
        ),
        (ONE_CHECK.replace("promql", "sql"), "check #1 `x`: kind `sql` is not one of promql"),
        (ONE_CHECK.replace("    kind: promql\n", ""), "`kind` is missing"),
        (ONE_CHECK + ONE_CHECK.replace("checks:\n", ""), "id `x` is used twice"),
        ("window: 5 minutes\n" + ONE_CHECK, "window: `5 minutes` is not a duration"),
        ("checks: [\n", "not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_a_broken_checklist_names_the_entry_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ChecklistError) as caught:
        parse_checklist(text, "ops.yaml")
    assert expected in str(caught.value)
    assert "ops.yaml" in str(caught.value)


def test_a_broken_checklist_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    broken = tmp_path / "triage.yaml"
    broken.write_text(ONE_CHECK + "    critcal: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, triage_checklist=str(broken))
    message = str(caught.value)
    assert "CHATOPS_TRIAGE_CHECKLIST" in message and "critcal: unknown key" in message
    with pytest.raises(ConfigError, match="cannot read the triage checklist"):
        load_settings(_env_file=None, triage_checklist=str(tmp_path / "missing.yaml"))
    assert load_settings(_env_file=None, triage_checklist="").triage_checklist is None
    assert DEFAULT_CHECKLIST.is_file()


def test_an_operator_adds_a_promql_check_without_python(tmp_path: Path) -> None:
    extra = load_checklist().model_dump(mode="json")
    text = DEFAULT_CHECKLIST.read_text() + (
        "\n  - id: backend_scrape\n"
        "    title: Backend scraped\n"
        "    kind: promql\n"
        '    query: min(up{job="3dpot-backend"})\n'
        "    direction: below\n"
        "    critical: 1\n"
    )
    checklist = parse_checklist(text, "custom.yaml")
    assert len(checklist.checks) == len(extra["checks"]) + 1
    added = checklist.checks[-1]
    assert added.kind == "promql" and added.direction == "below" and added.threshold("critical") == 1
