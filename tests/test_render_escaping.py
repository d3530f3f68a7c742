"""Outside text reaches Slack as text: no renderer lets an alert, a log line, a typed title, a Slack
name or a dependency's error ping a channel, mention a user or disguise a link.

Each case puts a hostile string into one free-text field, renders it the way the bot does, and walks
every string Slack parses as mrkdwn (fallback texts, section and context texts, fields, file titles
and alt texts): none of the raw markup may be there, the field must still be shown (escaped), and
nothing may be escaped twice. Plain-text objects (headers, buttons) are shown as typed, within limits.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.followup_store import Followup
from adapters.incident_store import AlertMessage, Incident, RcaDraft, TimelineEvent
from bot.gate.gate import Approval
from bot.registry import COMMANDS
from bot.render.alert import alert_message
from bot.render.common import HEADER_LIMIT, SECTION_LIMIT, Message, SlackReply, Upload, escape, link
from bot.render.gate import (
    awaiting_second_message,
    execution_footer,
    mfa_modal,
    notice_message,
    outcome_message,
    plan_message,
    progress_message,
)
from bot.render.home import HealthSeen, HomeData, home_view
from bot.render.incident import event_message, header_message
from bot.render.incident_workspace import (
    announcement_message,
    channel_link_message,
    reminder_message,
    resolution_message,
    update_modal,
)
from bot.render.rca import preview_message
from bot.render.triage import TriageWithGraph
from commands import rca
from commands.audit import AuditReport, AuditRow, Breakdown, Group, Totals
from commands.audit_indexes import AuditIndexes, IndexStatement
from commands.audit_results import AuditExport, AuditUnavailable
from commands.backup import BackupResult, PruneResult, StoredBackup
from commands.base import CommandResult
from commands.destructive import Execution, Plan, Step
from commands.graph import GraphData, GraphReport, Marker, Series, Threshold
from commands.health import Check, HealthReport
from commands.incident import Contact, IncidentResult
from commands.rca import GraphLink, RcaResult
from commands.restore import BackupList
from commands.restore_verify import TableCheck, VerifyReport
from commands.rollback import RunningContainer, VersionInfo, VersionList
from commands.triage import (
    AdviceShown,
    Evidence,
    Finding,
    LogEntry,
    LogsReport,
    LookupReport,
    Scan,
    TriageReport,
)

HOSTILE = (
    "<!channel> <!here> <@U0BOSS0001> <#C0PRIVATE> <!subteam^S0ALL|all>"
    " <https://evil.example/login|official runbook> & done"
)
RAW = ("<!channel>", "<!here>", "<@U0BOSS0001>", "<#C0PRIVATE>", "<!subteam^", "<https://evil.example/login|")
SHOWN = escape("<!channel>")
TWICE = ("&amp;lt;", "&amp;gt;", "&amp;amp;")
# A URL that would end the link early and put its own label and a ping after it.
HOSTILE_URL = "https://evil.example/login|<!channel> official runbook"

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
ALICE = "U0ALICE001"


def pick(field: str, name: str, default: str) -> str:
    """Return the hostile string for the field under test, the default for every other."""
    return HOSTILE if field == name else default


# --- walking a reply ------------------------------------------------------------------------------


def _walk(node: Any, mrkdwn: list[str], plain: list[str]) -> None:
    if isinstance(node, dict):
        kind, text = node.get("type"), node.get("text")
        if kind in ("mrkdwn", "plain_text") and isinstance(text, str):
            (mrkdwn if kind == "mrkdwn" else plain).append(text)
            return
        for value in node.values():
            _walk(value, mrkdwn, plain)
    elif isinstance(node, list):
        for item in node:
            _walk(item, mrkdwn, plain)


def texts(reply: SlackReply) -> tuple[list[str], list[str]]:
    """Return every string Slack parses as mrkdwn (or may show as such), and the plain-text ones."""
    mrkdwn: list[str] = []
    plain: list[str] = []
    for message in [reply.main, *reply.thread]:
        mrkdwn.append(message.text)
        _walk(message.blocks, mrkdwn, plain)
    for upload in reply.files:
        mrkdwn += [upload.title, upload.alt_text]
    return mrkdwn, plain


def assert_within_limits(message: Message) -> None:
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= HEADER_LIMIT
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= SECTION_LIMIT
        if block["type"] == "actions":
            assert all(len(element["text"]["text"]) <= 75 for element in block["elements"])


# --- results with one hostile field ---------------------------------------------------------------


def health(field: str) -> CommandResult:
    check = Check(
        name=pick(field, "name", "postgres"),
        group="platform",
        status="down",
        latency_ms=3.0,
        detail=pick(field, "detail", "connection refused"),
        reason="refused",
    )
    return HealthReport(verdict="down", checks=[check], checked_at=NOW, duration_ms=5, timeout_seconds=3)


def finding(field: str) -> Finding:
    return Finding(
        id="db_connections",
        title=pick(field, "title", "Database connections"),
        source="postgres",
        status="critical",
        headline=pick(field, "headline", "95 of 100 connections in use"),
        figure=pick(field, "figure", "95 %"),
        value=95.0,
        threshold=pick(field, "threshold", "critical > 90 %"),
        reason=pick(field, "reason", "max_connections is close"),
        duration_ms=12.0,
        timeout_seconds=5,
        evidence=[
            Evidence(
                title=pick(field, "evidence.title", "Slow queries"),
                columns=["pid", pick(field, "evidence.column", "query")],
                rows=[["1001", pick(field, "evidence.cell", "SELECT 1")]],
                note=pick(field, "evidence.note", "from pg_stat_activity"),
            )
        ],
        advice=[
            AdviceShown(
                title=pick(field, "advice.title", "Too many connections"),
                source=pick(field, "advice.source", "Runbook"),
                steps=[pick(field, "advice.step", "Restart the pool")],
            )
        ],
    )


def triage(field: str) -> CommandResult:
    return TriageReport(
        status="critical",
        findings=[finding(field)],
        window=pick(field, "window", "5m"),
        checked_at=NOW,
        duration_ms=100.0,
        checklist="triage_checks.yaml",
    )


def scan(field: str) -> Scan:
    return Scan(
        files=0 if field == "scan.pattern" else 1,
        files_skipped=0,
        bytes_read=10,
        non_json=0,
        untimed=0,
        errors=[pick(field, "scan.error", "")] if field == "scan.error" else [],
        patterns=[pick(field, "scan.pattern", "/var/log/app/*.log")],
    )


def entry(field: str) -> LogEntry:
    return LogEntry(
        time=NOW,
        source=pick(field, "entry.source", "app.log"),
        level=pick(field, "entry.level", "error"),
        summary=pick(field, "entry.summary", "GET /api/models 500"),
        data={"message": pick(field, "entry.data", "boom")},
    )


def lookup(field: str) -> CommandResult:
    return LookupReport(
        kind="request",
        id=pick(field, "id", "req-12345678"),
        entries=[entry(field)],
        log_lines=1,
        audit_rows=0,
        left_out=0,
        scan=scan(field),
        audit_problem=pick(field, "audit_problem", "") or None,
        duration_ms=4.0,
    )


def lookup_nothing(field: str) -> CommandResult:
    return lookup("").model_copy(update={"id": HOSTILE, "entries": [], "log_lines": 0})


def logs(field: str) -> CommandResult:
    return LogsReport(
        level=pick(field, "level", "error"),
        path=pick(field, "path", "/api"),
        since=pick(field, "since", "15m"),
        entries=[entry(field)],
        matched=1,
        left_out=0,
        scan=scan(field),
        duration_ms=4.0,
    )


def panel(field: str) -> GraphData:
    times = [NOW - timedelta(minutes=2), NOW - timedelta(minutes=1), NOW]
    return GraphData(
        title=pick(field, "title", "5xx rate"),
        query=pick(field, "query", "sum(rate(http_requests_total[5m]))"),
        start=times[0],
        end=times[-1],
        step_seconds=60,
        timestamps=times,
        series=[
            Series(name=pick(field, "series", "backend"), values=[1.0, 2.0, 3.0]),
            Series(name="frontend", values=[0.5, 0.5, 0.5]),
        ],
        thresholds=[Threshold(level="critical", value=2.5, label="critical 2.5")],
        markers=[Marker(at=times[1], kind="alert", label=pick(field, "marker", "HighErrorRate"))],
        status="ok",
    )


def graph(field: str) -> CommandResult:
    if field == "problem":
        broken = panel("").model_copy(update={"status": "rejected", "problem": HOSTILE})
        return GraphReport(panels=[broken], png=b"png")
    return GraphReport(panels=[panel(field)], png=b"png", render_ms=10.0)


def triage_with_graph(field: str) -> CommandResult:
    report = triage("")
    return TriageWithGraph(**dict(report), graph=graph(field))


def audit_report(field: str) -> CommandResult:
    row = AuditRow(
        id=1,
        timestamp=NOW,
        action=pick(field, "row.action", "LOGIN"),
        user_id=uuid.uuid4(),
        username=pick(field, "row.username", "alice"),
        ip_address=pick(field, "row.ip", "10.0.0.1"),
        outcome=pick(field, "row.outcome", "failure"),
        request_id=pick(field, "row.request_id", "req-1"),
    )
    group = Group(
        key=[pick(field, "group.key", "LOGIN")],
        events=3,
        distinct_ips=1,
        distinct_users=1,
        first_seen=NOW,
        last_seen=NOW,
        ips=[pick(field, "group.ip", "10.0.0.1")],
    )
    return AuditReport(
        form="user",
        subject="alice",
        description=pick(field, "description", "user alice"),
        note=pick(field, "note", "usernames are compared exactly"),
        since=pick(field, "since", "24h"),
        limit=1,
        totals=Totals(events=5, first_seen=NOW, last_seen=NOW, distinct_ips=1, distinct_users=1),
        breakdowns=[
            Breakdown(
                title=pick(field, "breakdown.title", "By action"),
                columns=[pick(field, "breakdown.column", "action")],
                groups=[group],
                total_groups=1,
            )
        ],
        rows=[row],
        omitted=4,
        export_arguments=pick(field, "export_arguments", "user alice since=24h"),
        database=pick(field, "database", "platform"),
        queried_at=NOW,
        duration_ms=3.0,
    )


def audit_export(field: str) -> CommandResult:
    return AuditExport(
        format="csv",
        description=pick(field, "description", "user alice"),
        since=pick(field, "since", "24h"),
        rows=10,
        size_bytes=100,
        truncated=pick(field, "truncated", "") or None,
        destination="slack",
        filename="audit.csv",
        database=pick(field, "database", "platform"),
        duration_ms=3.0,
        rows_per_second=100.0,
    )


def audit_indexes(field: str) -> CommandResult:
    statement = IndexStatement(
        name=pick(field, "name", "audit_log_user_idx"),
        purpose=pick(field, "purpose", "by user"),
        sql=pick(field, "sql", "CREATE INDEX ..."),
        present=False,
        valid=False,
    )
    return AuditIndexes(
        text="CREATE INDEX ...",
        preamble="",
        statements=[statement],
        database=pick(field, "database", "platform"),
        checked=field != "detail",
        detail=pick(field, "detail", ""),
    )


def audit_unavailable(field: str) -> CommandResult:
    return AuditUnavailable(
        database=pick(field, "database", "platform"),
        reason="refused",
        detail=pick(field, "detail", "connection refused"),
    )


def versions(field: str) -> CommandResult:
    running = RunningContainer(
        name=pick(field, "running.name", "backend"),
        id="abc",
        status=pick(field, "running.status", "running"),
        health=pick(field, "running.health", "healthy"),
        image=pick(field, "running.image", "3dpot/backend:v2.0.6"),
        version=pick(field, "running.version", "v2.0.6"),
        started_at=None,
    )
    item = VersionInfo(
        version=pick(field, "version", "v2.0.6"),
        image_id="sha256:1",
        built_at=pick(field, "built_at", "2026-04-30T10:00:00Z"),
        running=field not in ("running.image", "running.version"),
        deployed_at=pick(field, "deployed_at", "2026-04-30T11:00:00Z"),
    )
    return VersionList(
        service=pick(field, "service", "backend"),
        image="3dpot/backend",
        versions=[item],
        running=running,
        other_tags=[pick(field, "other_tag", "latest")],
        flags=[pick(field, "flag", "--no-health")],
    )


class Unexpected(CommandResult):
    """Something a renderer does not know, shown as its text."""

    detail: str

    def __str__(self) -> str:
        return self.detail


def stored(field: str) -> StoredBackup:
    return StoredBackup(
        id=pick(field, "backup.id", "2026-04-30_02-00-00"),
        created_at=NOW,
        type="full",
        type_label=pick(field, "backup.type_label", "database+storage"),
        size=1000,
        manifest_ok=False,
        problem=pick(field, "backup.problem", "checksum mismatch"),
        reason=pick(field, "backup.reason", "nightly"),
    )


def backup(field: str) -> CommandResult:
    return BackupResult(
        id=pick(field, "id", "2026-05-01_12-00-00"),
        type="full",
        type_label=pick(field, "type_label", "database+storage"),
        location=pick(field, "location", "s3://backups/3dpot"),
        made_by=pick(field, "made_by", "alice"),
        created_at=NOW,
        database=pick(field, "database", "platform"),
        tables=3,
        rows=10,
        database_bytes=100,
        objects=2,
        objects_bytes=200,
        total_bytes=300,
        database_seconds=1.0,
        objects_seconds=1.0,
        seconds=2.0,
        warnings=[pick(field, "warning", "slow")],
    )


def prune(field: str) -> CommandResult:
    return PruneResult(
        keep_days=7,
        location=pick(field, "location", "s3://backups/3dpot"),
        dry_run=True,
        delete=[stored(field)],
        kept=[pick(field, "kept", "2026-04-30_02-00-00 (latest)")],
        leftovers=[pick(field, "leftover", "2026-04-29_02-00-00")],
    )


def backup_list(field: str) -> CommandResult:
    return BackupList(location=pick(field, "location", "s3://backups/3dpot"), backups=[stored(field)])


def verify(field: str) -> CommandResult:
    return VerifyReport(
        id=pick(field, "id", "2026-04-30_02-00-00"),
        type_label=pick(field, "type_label", "database+storage"),
        location=pick(field, "location", "s3://backups/3dpot"),
        files_checked=2,
        bytes_checked=100,
        bad_files=[pick(field, "bad_file", "objects/ab/cd")],
        checksum_seconds=1.0,
        test_restore=True,
        scratch_database=pick(field, "scratch_database", "chatops_verify_1"),
        restore_seconds=2.0,
        tables=[TableCheck(name=pick(field, "table", "users"), expected=3, found=2)],
        problems=[pick(field, "problem", "row counts differ")],
        verified_at=NOW,
    )


def incident_record(field: str, status: str = "open") -> Incident:
    return Incident(
        id=7,
        channel_id="C0INCIDENT",
        title=pick(field, "title", "Checkout returns 5xx"),
        severity="P2",
        status=status,  # type: ignore[arg-type]
        commander=pick(field, "commander", ALICE),
        declared_by=pick(field, "declared_by", ALICE),
        started_at=NOW - timedelta(hours=1),
        declared_at=NOW - timedelta(hours=1),
        resolved_at=NOW if status == "resolved" else None,
        summary=pick(field, "summary", "rolled back") if status == "resolved" else None,
        last_update=pick(field, "last_update", "rolling back"),
        last_update_at=NOW,
        header_ts="1.2",
        comms_lead=pick(field, "comms_lead", ALICE),
        scribe=pick(field, "scribe", ALICE),
        origin_channel_id="C0DECLARED",
    )


def event(kind: str, text: str, actor: str | None = ALICE, **details: Any) -> TimelineEvent:
    return TimelineEvent(id=1, incident_id=7, at=NOW, kind=kind, actor=actor, text=text, details=details)


# Timeline entries as the bot stores them: typed text as typed, the bot's own records as mrkdwn.
TIMELINE: dict[str, TimelineEvent] = {
    "update": event("update", HOSTILE),
    "note": event("note", HOSTILE),
    "declared": event("declared", f"Declared: {HOSTILE} (P2)"),
    "resolved": event("resolved", f"Resolved after 5 min: {HOSTILE}"),
    "alert": event("alert", f"{HOSTILE} firing", actor=None),
    "commander_change": event(
        "commander", f"Commander <@{ALICE}> → {HOSTILE}", **{"from": ALICE, "to": HOSTILE}
    ),
    "actor": event("note", "checked the pool", actor=HOSTILE),
    "recorded": event("/health", f"Health: down — {escape(HOSTILE)}"),
    "role_change": event(
        "role",
        f"Communications lead <@{ALICE}> → {HOSTILE}",
        **{"from": ALICE, "to": HOSTILE, "role": "comms"},
    ),
    "followup": event("followup", f"Follow-up: {HOSTILE}", owner=ALICE),
    "followup_owner": event("followup", "Follow-up: add smoke tests", owner=HOSTILE),
    "tactical": event(
        "update",
        f"Conditions: {HOSTILE}",
        tactical={"conditions": HOSTILE, "actions": "rolling back", "needs": ""},
    ),
}


def incident_result(field: str) -> CommandResult:
    if field in TIMELINE:
        return IncidentResult(
            outcome="timeline", incident=incident_record(""), events=[TIMELINE[field]], as_of=NOW
        )
    if field.startswith("contact."):
        contact = Contact(
            role=pick(field, "contact.role", "DevOps Lead"),
            area=pick(field, "contact.area", "Infra"),
            contact=pick(field, "contact.contact", "devops@3dpot.com"),
        )
        return IncidentResult(outcome="contacts", contacts=[contact], as_of=NOW)
    if field in ("pending_title", "asked.title", "asked.commander"):
        existing = incident_record(field.removeprefix("asked."))
        return IncidentResult(
            outcome="asked",
            incident=existing,
            pending_title=pick(field, "pending_title", "Checkout is slow"),
            pending_severity="P3",
            as_of=NOW,
        )
    outcome = {"commander": "commander", "comms_lead": "role", "scribe": "role"}.get(field, "noted")
    role = {"comms_lead": "comms", "scribe": "scribe"}.get(field)
    return IncidentResult(
        outcome=outcome,  # type: ignore[arg-type]
        incident=incident_record(field),
        role=role,  # type: ignore[arg-type]
        as_of=NOW,
        slack_problems=[pick(field, "slack_problem", "could not pin the header: not_pinnable")],
    )


def rca_result(field: str) -> CommandResult:
    outcome = {"filing_error": "not_filed", "issue_url": "filed", "followup_problem": "filed"}.get(
        field, "drafted"
    )
    return RcaResult(
        outcome=outcome,  # type: ignore[arg-type]
        incident=incident_record("title" if field == "title" else ""),
        draft=draft(field),
        filing_error=pick(field, "filing_error", "") or None,
        slack_problems=[pick(field, "slack_problem", "could not post the preview: not_in_channel")],
        followup_problems=[pick(field, "followup_problem", "follow-up 1: GitHub said forbidden")],
    )


def draft(field: str) -> RcaDraft:
    """Render a real draft from the templates, with the hostile text where the field comes from."""
    incident = incident_record("title" if field == "title" else "", status="resolved")
    events = [
        event("declared", "Declared: Checkout returns 5xx (P2)"),
        event("note", pick(field, "note", "cause: a migration did not run")),
        event("update", pick(field, "update", "rolling back")),
        event("/health", escape(pick(field, "recorded", "Health: down"))),
    ]
    names = {ALICE: pick(field, "name", "Alice")}
    graphs = [GraphLink(title=pick(field, "graph_title", "Key metrics"), url="https://grafana.example/d/1")]
    followup = Followup(
        id=1,
        incident_id=7,
        text=pick(field, "followup", "add smoke tests"),
        owner=pick(field, "followup_owner", ALICE),
        created_by=ALICE,
        created_at=NOW,
        issue_number=2,
        issue_url="https://github.com/acme/3dpot/issues/2",
        issue_state="open",
    )
    context = rca.build_context(
        incident, events, now=NOW, names=names, latest_backup_at=None, graphs=graphs, followups=[followup]
    )
    body = rca.render(TEMPLATES, "en", context, names)
    filed = field == "issue_url"
    return RcaDraft(
        incident_id=7,
        language="en",
        title=rca.issue_title(incident),
        body=body,
        rendered_at=NOW,
        issue_number=1 if filed else None,
        issue_url=HOSTILE_URL if filed else None,
        filed_at=NOW if filed else None,
    )


def command(name: str, build: Callable[[str], CommandResult]) -> Callable[[str], SlackReply]:
    """Render a result with the registry's Slack renderer, as the bot does."""
    return lambda field: COMMANDS[name].slack(build(field))


def only(build: Callable[[str], Message]) -> Callable[[str], SlackReply]:
    return lambda field: SlackReply(main=build(field))


# --- messages built outside the command table -----------------------------------------------------


def alert(field: str) -> Message:
    labels = {
        "alertname": pick(field, "alertname", "HighErrorRate"),
        "severity": pick(field, "severity", "critical"),
        pick(field, "label.key", "service"): pick(field, "label.value", "backend"),
    }
    annotations = {
        "summary": pick(field, "summary", "5xx above 5 %"),
        "description": pick(field, "description", "for 5 minutes"),
        "runbook_url": HOSTILE_URL if field == "runbook_url" else "https://runbook.example/5xx",
    }
    source = HOSTILE_URL if field == "generatorURL" else "http://prometheus:9090/graph?g0.expr=x&g0.tab=1"
    message = AlertMessage(
        fingerprint=pick(field, "fingerprint", "0123abcd"),
        channel_id="C0INCIDENT",
        ts="1.1",
        thread_ts=None,
        status="firing",
        alertname=labels["alertname"],
        starts_at=NOW - timedelta(minutes=5),
        ends_at=None,
        alert={
            "labels": labels,
            "annotations": annotations,
            "generatorURL": source,
        },
        external_url=HOSTILE_URL if field == "external_url" else "http://alertmanager:9093",
        notifications=2,
        incident_id=None,
    )
    return alert_message(message, NOW)


def header(field: str) -> Message:
    incident = incident_record(field, status="resolved" if field == "summary" else "open")
    contacts = [Contact(role="DevOps Lead", area="Infra", contact=pick(field, "contact", "devops@3dpot.com"))]
    return header_message(incident, contacts, NOW)


def thread_event(field: str) -> Message:
    return event_message(incident_record(""), TIMELINE[field])


def announcement(field: str) -> Message:
    status = "resolved" if field == "summary" else "open"
    return announcement_message(incident_record(field, status=status), NOW)


def reminder(field: str) -> Message:
    return reminder_message(incident_record(field), "30m", "35 min")


def modal_of_update(field: str) -> Message:
    view = update_modal(incident_record(field), "C0INCIDENT")
    return Message(text="", blocks=view["blocks"])


def home(field: str) -> Message:
    data = HomeData(
        user_id=ALICE,
        now=NOW,
        incidents=[incident_record(field)],
        # Waiting for a second approval: the requester is named.
        plans=[dataclasses.replace(approval(field), status="awaiting_second")],
        health=HealthSeen(
            verdict=pick(field, "verdict", "healthy"), at=NOW, user_id=pick(field, "ran_by", ALICE)
        ),
        problems=[pick(field, "problem", "")] if field == "problem" else [],
    )
    view = home_view(data)
    return Message(text="", blocks=view["blocks"])


def plan(field: str) -> Plan:
    return Plan(
        title=pick(field, "title", "Roll back backend to v2.0.5"),
        current=[pick(field, "current", "backend v2.0.6")],
        target=[pick(field, "target", "backend v2.0.5")],
        kept=[pick(field, "kept", "the database")],
        way_back=[pick(field, "way_back", "/rollback v2.0.6")],
        warnings=[pick(field, "warning", "a migration ran since")],
    )


def approval(field: str) -> Approval:
    return Approval(
        id=uuid.uuid4(),
        command="rollback",
        arguments=[pick(field, "argument", "v2.0.5")],
        environment="production",
        requester=pick(field, "requester", ALICE),
        channel_id="C0INCIDENT",
        message_ts="1.1",
        request_id="r1",
        plan=plan(field),
        plan_fingerprint="f",
        typed_word=pick(field, "typed_word", "backend"),
        needs_second_approver=True,
        second_approver=None,
        status="pending",
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
    )


def steps(field: str) -> list[Step]:
    return [
        Step(name=pick(field, "step.name", "stop v2.0.6"), status="done", detail="", duration_ms=5.0),
        Step(name="start v2.0.5", status="failed", detail=pick(field, "step.detail", "exit code 1")),
    ]


def progress(field: str) -> Message:
    approved = approval(field)
    return progress_message(approved.plan.title, steps(field), execution_footer(approved))


def outcome(field: str) -> Message:
    approved = approval(field)
    result = Execution(
        command="rollback",
        succeeded=False,
        summary=pick(field, "summary", "v2.0.5 did not become healthy"),
        steps=steps(field),
        state=[pick(field, "state", "backend v2.0.6 running")],
        way_back=pick(field, "way_back", "/rollback v2.0.6"),
    )
    return outcome_message(approved.plan.title, result, execution_footer(approved))


def modal(field: str) -> Message:
    view = mfa_modal(approval(field), second=False)
    return Message(text="", blocks=view["blocks"])


def preview(field: str) -> Message:
    result = rca_result(field)
    assert isinstance(result, RcaResult)
    return preview_message(result)


@dataclass(frozen=True)
class Case:
    renderer: str
    fields: tuple[str, ...]
    build: Callable[[str], SlackReply]
    # Fields dropped on purpose (a URL that could break out of its link) rather than shown.
    dropped: tuple[str, ...] = ()


CASES = [
    Case("health", ("name", "detail"), command("health", health)),
    Case(
        "triage",
        (
            "title",
            "headline",
            "figure",
            "threshold",
            "reason",
            "evidence.title",
            "evidence.column",
            "evidence.cell",
            "evidence.note",
            "advice.title",
            "advice.source",
            "advice.step",
            "window",
        ),
        command("triage", triage),
    ),
    # The query is drawn in the picture's caption, not written in the triage reply.
    Case("triage-graph", ("title", "series", "marker", "problem"), command("triage", triage_with_graph)),
    Case(
        "triage-lookup",
        (
            "id",
            "entry.source",
            "entry.level",
            "entry.summary",
            "entry.data",
            "scan.error",
            "scan.pattern",
            "audit_problem",
        ),
        command("triage", lookup),
    ),
    Case("triage-lookup-nothing", ("id",), command("triage", lookup_nothing)),
    Case(
        "triage-logs",
        ("level", "path", "since", "entry.source", "entry.summary", "entry.data", "scan.error"),
        command("triage", logs),
    ),
    Case("graph", ("title", "query", "series", "marker", "problem"), command("graph", graph)),
    Case(
        "audit",
        (
            "description",
            "note",
            "since",
            "breakdown.title",
            "breakdown.column",
            "group.key",
            "group.ip",
            "row.action",
            "row.username",
            "row.ip",
            "row.outcome",
            "row.request_id",
            "export_arguments",
            "database",
        ),
        command("audit", audit_report),
    ),
    Case("audit-export", ("description", "since", "truncated", "database"), command("audit", audit_export)),
    Case("audit-indexes", ("name", "purpose", "sql", "database", "detail"), command("audit", audit_indexes)),
    Case("audit-unavailable", ("database", "detail"), command("audit", audit_unavailable)),
    Case(
        "rollback",
        (
            "service",
            "version",
            "built_at",
            "deployed_at",
            "running.name",
            "running.status",
            "running.health",
            "running.image",
            "running.version",
            "other_tag",
            "flag",
        ),
        command("rollback", versions),
    ),
    Case("rollback-unexpected", ("detail",), command("rollback", lambda field: Unexpected(detail=HOSTILE))),
    Case("restart", ("service", "running.name"), command("restart", versions)),
    Case(
        "backup",
        ("id", "type_label", "location", "made_by", "database", "warning"),
        command("backup", backup),
    ),
    Case(
        "backup-prune",
        ("location", "kept", "leftover", "backup.id", "backup.type_label", "backup.reason"),
        command("backup", prune),
    ),
    Case("backup-unexpected", ("detail",), command("backup", lambda field: Unexpected(detail=HOSTILE))),
    Case(
        "restore-list",
        ("location", "backup.id", "backup.type_label", "backup.problem", "backup.reason"),
        command("restore", backup_list),
    ),
    Case(
        "restore-verify",
        ("id", "type_label", "location", "bad_file", "scratch_database", "table", "problem"),
        command("restore", verify),
    ),
    Case(
        "incident",
        (
            *TIMELINE,
            "contact.role",
            "contact.area",
            "contact.contact",
            "pending_title",
            "asked.title",
            "asked.commander",
            "commander",
            "comms_lead",
            "scribe",
            "slack_problem",
        ),
        command("incident", incident_result),
    ),
    Case(
        "rca",
        ("filing_error", "slack_problem", "issue_url", "followup_problem"),
        command("rca", rca_result),
        dropped=("issue_url",),
    ),
    Case(
        "rca-preview",
        (
            "title",
            "note",
            "update",
            "recorded",
            "name",
            "graph_title",
            "issue_url",
            "followup",
            "followup_owner",
        ),
        only(preview),
        dropped=("issue_url",),
    ),
    Case(
        "alert",
        (
            "alertname",
            "severity",
            "label.key",
            "label.value",
            "summary",
            "description",
            "fingerprint",
            "runbook_url",
            "generatorURL",
            "external_url",
        ),
        only(alert),
        dropped=("runbook_url", "generatorURL", "external_url"),
    ),
    Case(
        "incident-header",
        ("title", "commander", "comms_lead", "scribe", "declared_by", "last_update", "summary", "contact"),
        only(header),
    ),
    Case(
        "incident-announcement",
        ("title", "commander", "comms_lead", "last_update", "summary"),
        only(announcement),
    ),
    Case(
        "incident-link",
        ("title", "declared_by", "commander"),
        only(lambda field: channel_link_message(incident_record(field))),
    ),
    Case(
        "incident-resolution",
        ("title", "summary"),
        only(lambda field: resolution_message(incident_record(field, status="resolved"), NOW)),
    ),
    Case("incident-reminder", ("title", "commander"), only(reminder)),
    Case("incident-update-form", ("title",), only(modal_of_update)),
    Case(
        "home",
        ("title", "commander", "requester", "verdict", "ran_by", "problem"),
        only(home),
    ),
    Case("incident-event", tuple(TIMELINE), only(thread_event)),
    Case(
        "gate-plan",
        ("title", "current", "target", "kept", "way_back", "warning", "argument", "requester", "typed_word"),
        only(lambda field: plan_message(approval(field))),
    ),
    Case(
        "gate-second",
        ("title", "current", "requester"),
        only(lambda field: awaiting_second_message(approval(field))),
    ),
    Case("gate-modal", ("title",), only(modal)),
    Case("gate-progress", ("title", "argument", "requester", "step.name", "step.detail"), only(progress)),
    Case("gate-outcome", ("title", "summary", "state", "way_back", "step.name", "argument"), only(outcome)),
    Case(
        "gate-notice",
        ("title",),
        only(lambda field: notice_message(f"Cancelled: {HOSTILE}", "Cancelled; nothing was changed.")),
    ),
]
PARAMS = [pytest.param(case, field, id=f"{case.renderer}:{field}") for case in CASES for field in case.fields]


@pytest.mark.parametrize(("case", "field"), PARAMS)
def test_outside_text_arrives_as_text(case: Case, field: str) -> None:
    reply = case.build(field)
    mrkdwn, plain = texts(reply)
    for text in mrkdwn:
        for fragment in RAW:
            assert fragment not in text, f"raw {fragment} in {text!r}"
        for twice in TWICE:
            assert twice not in text, f"escaped twice in {text!r}"
    shown = any(SHOWN in text for text in mrkdwn) or any("<!channel>" in text for text in plain)
    assert shown != (field in case.dropped), (mrkdwn, plain)
    for message in [reply.main, *reply.thread]:
        assert_within_limits(message)


def test_a_graph_file_says_what_it_shows_escaped_once() -> None:
    reply = COMMANDS["graph"].slack(graph("title"))
    assert len(reply.files) == 1
    upload: Upload = reply.files[0]
    assert upload.title.startswith(escape(HOSTILE)) and upload.alt_text.startswith(escape(HOSTILE))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a?x=1&y=2", "<https://example.com/a?x=1&amp;y=2|Label &amp; more>"),
        ("http://example.com", "<http://example.com|Label &amp; more>"),
        (HOSTILE_URL, None),
        ("https://example.com/a b", None),
        ("https://example.com/<!channel>", None),
        ("https://example.com/\nx", None),
        ("javascript:alert(1)", None),
        ("ftp://example.com", None),
        ("", None),
    ],
)
def test_links_are_built_only_from_urls_that_cannot_break_out(url: str, expected: str | None) -> None:
    assert link(url, "Label & more") == expected


def test_validated_mentions_and_the_bots_own_links_stay() -> None:
    message = plan_message(approval(""))
    assert f"<@{ALICE}>" in message.text
    recorded = event_message(incident_record(""), TIMELINE["commander_change"])
    assert f"<@{ALICE}>" in recorded.blocks[0]["text"]["text"]
    filed = rca_result("")
    assert isinstance(filed, RcaResult)
    good = filed.model_copy(
        update={
            "outcome": "filed",
            "draft": filed.draft.model_copy(
                update={"issue_number": 1, "issue_url": "https://github.com/acme/3dpot/issues/1"}
            ),
        }
    )
    answer = COMMANDS["rca"].slack(good).main.text
    assert "<https://github.com/acme/3dpot/issues/1|GitHub issue #1>" in answer
    fired = alert("")
    assert "<https://runbook.example/5xx|Runbook>" in str(fired.blocks)
