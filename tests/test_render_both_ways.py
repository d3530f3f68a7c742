"""Every result rendered both ways: the terminal shows no Slack markup, Slack no terminal markup.

For each command of the table, representative results of every type it returns (the builders of
test_render_escaping, plus the variants each renderer branches on) are printed by the command's
terminal renderer and rendered by its Slack renderer:

- the terminal text holds no emoji code (`:x:`), no `*bold*`, `_italic_` or backtick, no
  `<url|label>`, `<@U…>`, `<#C…>` or `<!…>`, no `&lt;` `&gt;` `&amp;` entity, and no rich markup
  printed as text (`[bold]`, `[/]`). The console is built with `emoji=False`: a Slack emoji code
  handed to rich stays visible here, whether or not rich happens to know its name;
- every string of the Slack reply (texts, blocks, files' titles) holds no rich markup and no ANSI
  escape, also after the result was printed in colour.

Words typed by someone reach the terminal as typed (never escaped for Slack): each field the
escaping test fills with hostile text is checked for entities. The gate's terminal renderings (plan,
steps, outcome) and the CLI's own printing (`chatops mfa`, `chatops audit-trail`, a destructive
command through the gate) are checked the same way.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from rich.console import Console

from adapters.followup_store import Followup
from adapters.incident_store import TimelineEvent
from bot.cli.gate import run_gate_command
from bot.cli.main import run_command
from bot.config import Settings
from bot.gate.mfa import Enrollment
from bot.registry import COMMANDS
from bot.render.common import error_text, plain
from bot.render.gate import (
    awaiting_second_message,
    execution_footer,
    mfa_modal,
    notice_message,
    outcome_message,
    plan_message,
    progress_message,
    terminal_execution,
    terminal_plan,
)
from bot.render.incident_workspace import channel_link_message, resolution_message
from bot.render.mfa import enroll_modal, enrollment_message, reset_modal
from bot.render.steps import StepBars
from commands import rca as rca_command
from commands.audit_results import AuditExport
from commands.base import CommandResult
from commands.destructive import Execution, Step
from commands.health import Check, HealthReport
from commands.incident import Contact, IncidentResult
from commands.incident_stats import compute
from commands.rca import RcaResult
from commands.restore import BackupList
from commands.triage import Finding, Scan
from tests import test_render_escaping as built
from tests.gate_helpers import (
    drill_command,  # noqa: F401  (autouse fixture: /drill, a destructive command for tests)
    terminal_gate_settings,
)

# --- what each side must not show -----------------------------------------------------------------

# Bounded so that legitimate terminal text passes: a time (12:30:45), `*` in PromQL (a * 100),
# snake_case names, Markdown's `**bold**`.
SLACK_MARKUP = {
    "emoji code": re.compile(r"(?<![\w:]):[a-z0-9_+'-]+:(?![\w:])"),
    "bold": re.compile(r"(?<![\w*])\*(?=[^\s*])[^*\n]*?(?<=[^\s*])\*(?![\w*])"),
    "italic": re.compile(r"(?<![\w_])_(?=[^\s_])[^_\n]*?(?<=[^\s_])_(?![\w_])"),
    "code": re.compile(r"`"),
    "link": re.compile(r"<[a-z][a-z0-9+.-]*:[^>\s]*[|>]"),
    "mention": re.compile(r"<[@#!]"),
    "entity": re.compile(r"&(?:lt|gt|amp);"),
}
# What Slack alone reads: the RCA draft is Markdown for GitHub, where code, emphasis, emoji codes
# and entities mean the same; only Slack's angle-bracket markup would be wrong there.
SLACK_ONLY = ("link", "mention")
RICH_MARKUP = re.compile(
    r"\[/\]|\[/?(?:bold|dim|italic|underline|strike|reverse|blink|link|on|not|"
    r"red|green|yellow|blue|magenta|cyan|white|black|bright_\w+|#[0-9a-f]{6})\b[^\]\n]*\]"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Typed by people: shown on the terminal exactly like this.
TYPED = "p95 < 300 ms & falling"
ALICE = built.ALICE
ADMIN = "U0ADMIN001"


def slack_markup(text: str, forms: tuple[str, ...] = tuple(SLACK_MARKUP)) -> list[str]:
    """Return every piece of Slack markup in terminal text, with its surroundings."""
    return [
        f"{name}: {text[max(match.start() - 30, 0) : match.end() + 30]!r}"
        for name in forms
        for match in SLACK_MARKUP[name].finditer(text)
    ]


def terminal_markup(text: str) -> list[str]:
    """Return every piece of rich markup or ANSI escape in a text meant for Slack."""
    return [match.group(0) for pattern in (RICH_MARKUP, ANSI) for match in pattern.finditer(text)]


def console(color: bool = False, terminal: bool | None = None) -> tuple[Console, io.StringIO]:
    """Build a console like the CLI's (soft wrap, no highlighting) that writes into a string."""
    buffer = io.StringIO()
    printer = Console(
        file=buffer,
        width=200,
        highlight=False,
        soft_wrap=True,
        emoji=False,
        color_system="truecolor" if color else None,
        force_terminal=color if terminal is None else terminal,
    )
    return printer, buffer


def strings(node: Any) -> Iterator[str]:
    """Yield every string of a reply, a message or a view: texts, block fields, files' titles."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        node = dataclasses.asdict(node)
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from strings(item)


def assert_no_terminal_markup(reply: Any) -> None:
    found = [(text, terminal_markup(text)) for text in strings(reply) if terminal_markup(text)]
    assert not found, found


# --- representative results of every command ----------------------------------------------------


def event(kind: str, text: str, actor: str | None = ALICE, **details: Any) -> TimelineEvent:
    return built.event(kind, text, actor, **details)


# As the bot records them (bot/slack/incidents.record): typed words as typed, its own records mrkdwn.
TIMELINE = [
    event("declared", "Declared: Checkout returns 5xx (P2)"),
    event("update", TYPED),
    event("note", "cause: a migration did not run"),
    event("commander", f"Commander <@{ALICE}> → <@{ADMIN}>", **{"from": ALICE, "to": ADMIN}),
    event("alert", "HighErrorRate firing", actor=None),
    event("/triage", "Triage: critical — Database connections, p95 &gt; 2 s &amp; rising"),
    event("/rollback", f"Plan: Roll back backend to v2.0.5 (awaiting confirmation by <@{ALICE}>)"),
    event(
        "mfa", f":warning: <@{ADMIN}> reset the MFA enrollment of <@{ALICE}>; 1 plan(s) of theirs cancelled."
    ),
    event(
        "mfa",
        f":rotating_light: <@{ALICE}> is locked out of MFA step-up after 5 wrong codes in a row"
        " (until 12:30:45 UTC).",
    ),
    event("/rca", "RCA draft for INC-7: <https://github.com/acme/3dpot/issues/1|GitHub issue #1>"),
    event("resolved", "Resolved after 60 min: rolled back"),
]


def healthy() -> CommandResult:
    report = built.health("")
    assert isinstance(report, HealthReport)
    ok = Check(name="redis", group="bot", status="ok", latency_ms=1.0, detail="PONG")
    return report.model_copy(update={"verdict": "healthy", "checks": [ok]})


def triage_mixed() -> CommandResult:
    critical = built.finding("")
    findings: list[Finding] = [
        critical,
        critical.model_copy(
            update={"id": "p95", "title": "p95 latency", "status": "warn", "figure": "2.1 s"}
        ),
        critical.model_copy(update={"id": "up", "title": "Backend up", "status": "ok", "evidence": []}),
        critical.model_copy(
            update={"id": "cpu", "title": "Container CPU", "status": "unknown", "headline": "no data yet"}
        ),
    ]
    return built.triage("").model_copy(update={"findings": findings})


def lookup_troubled() -> CommandResult:
    scan = Scan(
        files=1,
        files_skipped=2,
        bytes_read=10,
        non_json=3,
        untimed=1,
        errors=["/var/log/app/old.log: permission denied"],
        patterns=["/var/log/app/*.log"],
    )
    return built.lookup("").model_copy(
        update={"scan": scan, "audit_problem": "timeout after 5 s", "left_out": 4}
    )


def lookup_empty() -> CommandResult:
    return built.lookup("").model_copy(update={"entries": [], "log_lines": 0})


def logs_empty() -> CommandResult:
    return built.logs("").model_copy(update={"entries": [], "matched": 0})


def graph_rejected() -> CommandResult:
    panel = built.panel("").model_copy(
        update={"status": "rejected", "problem": "parse error at char 12: unexpected <EOF>"}
    )
    return built.graph("").model_copy(update={"panels": [panel]})


def graph_promql() -> CommandResult:
    query = 'sum(rate(http_requests_total{status=~"5.."}[5m])) * 100 / sum(rate(http_requests_total[5m]))'
    return built.graph("").model_copy(
        update={"panels": [built.panel("").model_copy(update={"query": query})]}
    )


def audit_to_stdout() -> CommandResult:
    export = built.audit_export("")
    assert isinstance(export, AuditExport)
    return export.model_copy(
        update={"destination": "stdout", "truncated": "stopped at 1,000,000 rows (max_rows=)"}
    )


def audit_indexes_checked() -> CommandResult:
    indexes = built.audit_indexes("")
    return indexes.model_copy(update={"checked": True, "detail": ""})


def versions_none_running() -> CommandResult:
    return built.versions("").model_copy(update={"running": None})


def no_backups() -> CommandResult:
    return BackupList(location="s3://backups/3dpot", backups=[])


def incident_done(outcome: str, kind: str, text: str) -> Callable[[], CommandResult]:
    def build() -> CommandResult:
        resolved = outcome == "resolved"
        incident = built.incident_record("", status="resolved" if resolved else "open")
        return IncidentResult(
            outcome=outcome,  # type: ignore[arg-type]
            incident=incident,
            event=event(kind, text),
            as_of=built.NOW,
            slack_problems=["could not pin the header: not_pinnable"],
        )

    return build


def incident_timeline() -> CommandResult:
    return IncidentResult(
        outcome="timeline", incident=built.incident_record(""), events=TIMELINE, as_of=built.NOW
    )


def incident_asked() -> CommandResult:
    return IncidentResult(
        outcome="asked",
        incident=built.incident_record(""),
        pending_title="Checkout is slow",
        pending_severity="P3",
        as_of=built.NOW,
    )


def incident_role() -> CommandResult:
    incident = built.incident_record("").model_copy(update={"comms_lead": ADMIN})
    change = {"from": ALICE, "to": ADMIN, "role": "comms"}
    return IncidentResult(
        outcome="role",
        role="comms",
        incident=incident,
        event=event("role", f"Communications lead <@{ALICE}> → <@{ADMIN}>", **change),
        as_of=built.NOW,
    )


def incident_own_channel() -> CommandResult:
    incident = built.incident_record("").model_copy(
        update={"channel_id": "C0OWN00001", "channel_name": "inc-7-x"}
    )
    return IncidentResult(
        outcome="declared",
        incident=incident,
        event=event("declared", "Declared: Checkout returns 5xx (P1)"),
        as_of=built.NOW,
        slack_problems=["could not invite U0GONE0001 (cant_invite)"],
    )


def incident_stats() -> CommandResult:
    records = [
        built.incident_record("").model_copy(
            update={
                "id": number,
                "severity": severity,
                "acknowledged_at": built.NOW - timedelta(minutes=50),
                "resolved_at": built.NOW - timedelta(minutes=5) if number % 2 else None,
                "status": "resolved" if number % 2 else "open",
            }
        )
        for number, severity in enumerate(("P1", "P1", "P2", "P4"), start=1)
    ]
    stats = compute(records, timedelta(days=90), built.NOW)
    return IncidentResult(outcome="stats", stats=stats, as_of=built.NOW, png=b"\x89PNG")


def incident_contacts() -> CommandResult:
    contacts = [Contact(role="DevOps Lead", area="Infra & DB", contact="devops@3dpot.com")]
    return IncidentResult(outcome="contacts", contacts=contacts, as_of=built.NOW)


def rca_with_followups() -> CommandResult:
    result = rca("filed")()
    assert isinstance(result, RcaResult)
    followup = Followup(
        id=1,
        incident_id=7,
        text=TYPED,
        owner=ALICE,
        created_by=ALICE,
        created_at=built.NOW,
        issue_number=2,
        issue_url="https://github.com/acme/3dpot/issues/2",
        issue_state="open",
    )
    problem = "follow-up 2 (page the DBA): GitHub said forbidden: Resource not accessible"
    return result.model_copy(update={"followups": [followup], "followup_problems": [problem]})


def rca(outcome: str, preview_only: bool = False) -> Callable[[], CommandResult]:
    def build() -> CommandResult:
        result = built.rca_result("")
        assert isinstance(result, RcaResult)
        draft = result.draft
        if outcome in ("filed", "updated"):
            url = "https://github.com/acme/3dpot/issues/1"
            draft = draft.model_copy(update={"issue_number": 1, "issue_url": url, "filed_at": built.NOW})
        return result.model_copy(
            update={
                "outcome": outcome,
                "draft": draft,
                "preview_only": preview_only,
                "filing_error": "the token was refused (401): check GITHUB_TOKEN"
                if outcome == "not_filed"
                else None,
            }
        )

    return build


def rca_of_the_timeline() -> CommandResult:
    """A draft drawn from a timeline with the bot's own records in it (mrkdwn)."""
    result = built.rca_result("")
    assert isinstance(result, RcaResult)
    names = {ALICE: "Alice", ADMIN: "Ada"}
    incident = built.incident_record("", status="resolved")
    context = rca_command.build_context(
        incident, TIMELINE, now=built.NOW, names=names, latest_backup_at=None, graphs=[]
    )
    body = rca_command.render(built.TEMPLATES, "en", context, names)
    return result.model_copy(update={"draft": result.draft.model_copy(update={"body": body})})


def unexpected(text: str) -> Callable[[], CommandResult]:
    return lambda: built.Unexpected(detail=text)


RESULTS: dict[str, dict[str, Callable[[], CommandResult]]] = {
    "health": {"down": lambda: built.health(""), "healthy": healthy},
    "triage": {
        "report": lambda: built.triage(""),
        "report-mixed": triage_mixed,
        "report-graph": lambda: built.triage_with_graph(""),
        "lookup": lambda: built.lookup(""),
        "lookup-troubled": lookup_troubled,
        "lookup-empty": lookup_empty,
        "logs": lambda: built.logs(""),
        "logs-empty": logs_empty,
    },
    "graph": {"ok": lambda: built.graph(""), "promql": graph_promql, "rejected": graph_rejected},
    "audit": {
        "report": lambda: built.audit_report(""),
        "export": lambda: built.audit_export(""),
        "export-stdout": audit_to_stdout,
        "indexes": lambda: built.audit_indexes(""),
        "indexes-checked": audit_indexes_checked,
        "unavailable": lambda: built.audit_unavailable(""),
    },
    "rollback": {
        "versions": lambda: built.versions(""),
        "none-running": versions_none_running,
        "other": unexpected("no such service"),
    },
    "restart": {"versions": lambda: built.versions("")},
    "backup": {
        "backup": lambda: built.backup(""),
        "prune": lambda: built.prune(""),
        "other": unexpected("nothing to do"),
    },
    "restore": {
        "list": lambda: built.backup_list(""),
        "list-empty": no_backups,
        "verify": lambda: built.verify(""),
        "other": unexpected("nothing to do"),
    },
    "incident": {
        "declared": incident_done("declared", "declared", "Declared: Checkout returns 5xx (P2)"),
        "updated": incident_done("updated", "update", TYPED),
        "noted": incident_done("noted", "note", "cause: a migration did not run"),
        "severity": incident_done("severity", "severity", "Severity P2 → P1"),
        "commander": incident_done("commander", "commander", f"Commander <@{ALICE}> → <@{ADMIN}>"),
        "resolved": incident_done("resolved", "resolved", "Resolved after 60 min: rolled back"),
        "asked": incident_asked,
        "timeline": incident_timeline,
        "contacts": incident_contacts,
        "role": incident_role,
        "followup": incident_done("followup", "followup", f"Follow-up: {TYPED}"),
        "form": incident_done("form", "update", TYPED),
        "declared-own-channel": incident_own_channel,
        "stats": incident_stats,
    },
    "rca": {
        "drafted": rca("drafted"),
        "drafted-from-records": rca_of_the_timeline,
        "preview": rca("drafted", preview_only=True),
        "not-filed": rca("not_filed"),
        "filed": rca("filed"),
        "updated": rca("updated"),
        "filed-followups": rca_with_followups,
    },
}
# Registered by some tests (a destructive command for the gate's tests), not a command of the bot.
TEST_ONLY = frozenset({"drill", "drill2"})
PARAMS = [
    pytest.param(name, label, build, id=f"{name}:{label}")
    for name, builds in RESULTS.items()
    for label, build in builds.items()
]


def print_terminal(name: str, result: CommandResult, color: bool, capsys: pytest.CaptureFixture[str]) -> str:
    """Print a result with its command's terminal renderer; return all it wrote (stderr included)."""
    capsys.readouterr()
    printer, buffer = console(color)
    COMMANDS[name].terminal(result, printer)
    # A few print beside the result on stderr (an export written to stdout, a failure).
    captured = capsys.readouterr()
    return buffer.getvalue() + captured.out + captured.err


def test_every_command_is_rendered_both_ways() -> None:
    # A new command needs representative results of each type it returns in RESULTS.
    assert set(COMMANDS) - TEST_ONLY == set(RESULTS)


@pytest.mark.parametrize(("name", "label", "build"), PARAMS)
def test_the_terminal_shows_no_slack_markup(
    name: str, label: str, build: Callable[[], CommandResult], capsys: pytest.CaptureFixture[str]
) -> None:
    result = build()
    text = print_terminal(name, result, False, capsys)
    assert text.strip(), "the terminal renderer printed nothing"
    if isinstance(result, RcaResult) and result.outcome == "drafted":
        # The draft is printed as Markdown to copy into GitHub: only Slack's own markup is wrong in it.
        body = result.draft.body.strip()
        assert body in text
        assert slack_markup(body, SLACK_ONLY) == []
        text = text.replace(body, "")
    assert slack_markup(text) == []
    # Markup meant for rich, printed as text instead, would be terminal markup on show.
    assert RICH_MARKUP.findall(text) == []
    if name == "incident" and label in ("updated", "timeline"):
        assert TYPED in text


@pytest.mark.parametrize(("name", "label", "build"), PARAMS)
def test_slack_shows_no_terminal_markup(
    name: str, label: str, build: Callable[[], CommandResult], capsys: pytest.CaptureFixture[str]
) -> None:
    before = COMMANDS[name].slack(build())
    assert_no_terminal_markup(before)
    # Printed in colour first: nothing of the terminal's rendering may reach Slack's.
    result = build()
    print_terminal(name, result, True, capsys)
    after = COMMANDS[name].slack(result)
    assert_no_terminal_markup(after)
    assert after == before


# --- words typed by someone: as typed on the terminal -------------------------------------------

# The escaping test's results with one hostile field, and the command that renders them.
TYPED_CASES: dict[str, tuple[str, Callable[[str], CommandResult]]] = {
    "health": ("health", built.health),
    "triage": ("triage", built.triage),
    "triage-graph": ("triage", built.triage_with_graph),
    "triage-lookup": ("triage", built.lookup),
    "triage-logs": ("triage", built.logs),
    "graph": ("graph", built.graph),
    "audit": ("audit", built.audit_report),
    "audit-export": ("audit", built.audit_export),
    "audit-indexes": ("audit", built.audit_indexes),
    "audit-unavailable": ("audit", built.audit_unavailable),
    "rollback": ("rollback", built.versions),
    "restart": ("restart", built.versions),
    "backup": ("backup", built.backup),
    "backup-prune": ("backup", built.prune),
    "restore-list": ("restore", built.backup_list),
    "restore-verify": ("restore", built.verify),
    "incident": ("incident", built.incident_result),
    "rca": ("rca", built.rca_result),
}
TYPED_PARAMS = [
    pytest.param(case.renderer, field, id=f"{case.renderer}:{field}")
    for case in built.CASES
    if case.renderer in TYPED_CASES
    for field in case.fields
    # Stored escaped (the bot's own record of a result, mrkdwn): its entities are Slack's, and the
    # terminal turns them back (the timeline above holds such records).
    if field != "recorded"
]


@pytest.mark.parametrize(("case", "field"), TYPED_PARAMS)
def test_typed_words_reach_the_terminal_unescaped(
    case: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, build = TYPED_CASES[case]
    text = print_terminal(name, build(field), False, capsys)
    # The hostile words hold Slack's markup themselves; escaped for Slack, they would show entities.
    assert slack_markup(text, ("entity",)) == []


# --- the gate and the CLI's own printing --------------------------------------------------------


def steps() -> list[Step]:
    return [
        Step(name="snapshot backend", status="done", detail="", duration_ms=1200.0),
        Step(name="copy objects", status="running", detail="42% · 420 of 1,000 objects"),
        Step(name="start v2.0.5", status="failed", detail="exit code 1 at 12:30:45"),
        Step(name="health-wait", status="skipped"),
        Step(name="swap", status="pending"),
    ]


def executions() -> list[Execution]:
    failed = Execution(
        command="rollback",
        succeeded=False,
        summary="v2.0.5 did not become healthy; v2.0.6 put back",
        steps=steps(),
        state=["backend v2.0.6 running (healthy)"],
        way_back="/rollback v2.0.6",
    )
    done = failed.model_copy(update={"succeeded": True, "summary": "backend runs v2.0.5", "way_back": ""})
    return [failed, done]


def test_the_gates_terminal_renderings_show_no_slack_markup() -> None:
    approval = built.approval("")
    printer, buffer = console()
    terminal_plan(approval.plan, printer)
    for result in executions():
        terminal_execution(result, printer)
    text = buffer.getvalue()
    assert "Plan: Roll back backend to v2.0.5" in text and "Failed" in text and "Succeeded" in text
    assert slack_markup(text) == []
    assert RICH_MARKUP.findall(text) == []


@pytest.mark.parametrize("live", [False, True], ids=["lines", "bars"])
async def test_step_progress_shows_no_slack_markup(live: bool) -> None:
    printer, buffer = console(color=live, terminal=live)
    with StepBars(printer) as bars:
        await bars.publish(steps())
        await bars.publish([step.model_copy(update={"status": "done"}) for step in steps()])
    text = ANSI.sub("", buffer.getvalue())
    assert "copy objects" in text
    assert slack_markup(text) == []
    assert RICH_MARKUP.findall(text) == []


def test_the_gates_slack_messages_show_no_terminal_markup() -> None:
    approval = built.approval("")
    footer = execution_footer(approval)
    enrollment = Enrollment(user_id=ALICE, secret="JBSWY3DPEHPK3PXP", uri="otpauth://totp/chatops:U0ALICE001")
    messages: list[Any] = [
        plan_message(approval),
        awaiting_second_message(approval),
        mfa_modal(approval, second=True),
        progress_message(approval.plan.title, steps(), footer),
        *(outcome_message(approval.plan.title, result, footer) for result in executions()),
        notice_message("Cancelled: Roll back backend", "Cancelled; nothing was changed."),
        enroll_modal(enrollment, "Scan the QR code."),
        enrollment_message(enrollment, "Scan the QR code."),
        reset_modal(ALICE, "C0INCIDENT"),
        error_text("unknown option `x`", "/rollback <version>"),
        built.alert(""),
        built.header(""),
        *(built.thread_event(field) for field in built.TIMELINE),
        built.preview(""),
        built.announcement(""),
        built.reminder(""),
        built.modal_of_update(""),
        built.home(""),
        channel_link_message(built.incident_record("")),
        resolution_message(built.incident_record("", status="resolved"), built.NOW),
    ]
    for message in messages:
        assert_no_terminal_markup(message)


@pytest.mark.parametrize(
    ("mrkdwn", "text"),
    [
        (":white_check_mark: MFA enrolled.", "MFA enrolled."),
        ("Run `/mfa enroll`, then `/mfa confirm <code>`.", "Run /mfa enroll, then /mfa confirm <code>."),
        (f"To reset <@{ALICE}> and <@U0BOB0001|bob>", f"To reset @{ALICE} and @bob"),
        ("<!here> <!channel> <!subteam^S01|@oncall> <#C01|general>", "@here @channel @oncall #general"),
        (
            "started <!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00 UTC>",
            "started 2024-05-01 12:00 UTC",
        ),
        (
            "<https://a.example/?a=1&amp;b=2|Runbook &amp; more>",
            "Runbook & more (https://a.example/?a=1&b=2)",
        ),
        ("<https://a.example/x>", "https://a.example/x"),
        ("*Seen:* 95 % _(runbook)_ ~old~", "Seen: 95 % (runbook) old"),
        ("rate(x[5m]) * 100 at 12:30:45, snake_case_name", "rate(x[5m]) * 100 at 12:30:45, snake_case_name"),
        ("`a *b* :x:` ```  col  &lt;1&gt;\n  2```", "a *b* :x:   col  <1>\n  2"),
        ("p95 &lt; 300 ms &amp; falling; typed &amp;lt;", "p95 < 300 ms & falling; typed &lt;"),
        ("done :white_check_mark:\n:x: *Failed* — why", "done\nFailed — why"),
    ],
)
def test_plain_turns_mrkdwn_into_terminal_text(mrkdwn: str, text: str) -> None:
    assert plain(mrkdwn) == text


# --- the CLI's own printing, with real objects ---------------------------------------------------


@pytest.fixture
async def cli_settings(tmp_path: Path) -> Settings:
    return await terminal_gate_settings(
        "chatops_test_render_both_ways",
        tmp_path / "anchors",
        operators=[ALICE, ADMIN],
        mfa_admins=[ADMIN],
        cli_user=ALICE,
    )


@pytest.fixture
def typed_at_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Answers typed at the terminal, in order."""
    answers: list[str] = []

    def reader(prompt: str = "") -> str:
        return answers.pop(0)

    monkeypatch.setattr("builtins.input", reader)
    monkeypatch.setattr("getpass.getpass", reader)
    yield answers
    assert answers == [], f"unused answers: {answers}"


def seed_from(printed: str) -> str:
    match = re.search(r"^key: (\w+)$", printed, re.MULTILINE)
    assert match is not None, printed
    return match.group(1)


@pytest.mark.usefixtures("postgres", "redis")
async def test_the_clis_mfa_audit_trail_and_gate_printing_shows_no_slack_markup(
    cli_settings: Settings, typed_at_terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = cli_settings.model_copy(update={"cli_user": ADMIN})
    printed: list[str] = []

    async def run(settings: Settings, name: str, tokens: list[str], expected: int) -> str:
        capsys.readouterr()
        if name in COMMANDS:
            code = await run_command(settings, name, tokens, as_json=False)
        else:
            code = await run_gate_command(settings, name, tokens, as_json=False)
        out = capsys.readouterr()
        assert code == expected, out
        printed.append(out.out + out.err)
        return out.out + out.err

    assert "not enrolled" in await run(cli_settings, "mfa", ["status"], 0)
    seed = seed_from(await run(cli_settings, "mfa", ["enroll"], 0))
    typed_at_terminal.append("000000")
    await run(cli_settings, "mfa", ["confirm"], 1)
    typed_at_terminal.append(pyotp.TOTP(seed).now())
    assert "MFA enrolled." in await run(cli_settings, "mfa", ["confirm"], 0)
    assert "MFA: enrolled" in await run(cli_settings, "mfa", ["status"], 0)
    # A destructive command through the gate: plan, steps, outcome.
    typed_at_terminal.extend(["yes", pyotp.TOTP(seed).at(time.time() + 30)])
    assert "counter = 3" in await run(cli_settings, "drill", ["3"], 0)

    admin_seed = seed_from(await run(admin, "mfa", ["enroll"], 0))
    typed_at_terminal.append(pyotp.TOTP(admin_seed).now())
    await run(admin, "mfa", ["confirm"], 0)
    typed_at_terminal.append(pyotp.TOTP(admin_seed).at(time.time() + 30))
    reset = await run(admin, "mfa", ["reset", f"<@{ALICE}>"], 0)
    assert f"To reset the MFA enrollment of @{ALICE}" in reset and "removed" in reset

    assert "intact" in await run(cli_settings, "audit-trail", ["verify"], 0)
    assert "MFA_RESET" in await run(cli_settings, "audit-trail", ["recent"], 0)

    for text in printed:
        # The enrollment's URI is the authenticator's, shown as it is.
        shown = re.sub(r"^uri: .*$", "", text, flags=re.MULTILINE)
        assert slack_markup(shown) == [], shown
        assert RICH_MARKUP.findall(shown) == [], shown
