"""/triage renders within Slack's limits (50 blocks, 3000 characters a section), posts through the
spec-checked fake Slack with the evidence threaded, and prints readably in a terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from slack_sdk.web.async_client import AsyncWebClient

from bot.registry import COMMANDS
from bot.render.common import HEADER_LIMIT, SECTION_LIMIT, Message
from bot.render.triage import slack, terminal
from bot.services import Services
from bot.slack.reply import post_reply
from commands.triage import (
    AdviceShown,
    Evidence,
    Finding,
    LogEntry,
    LogsReport,
    LookupReport,
    Scan,
    TriageReport,
    overall,
)
from tests.conftest import BOT_TOKEN, make_settings
from tests.fakes import FakeSlack, validate_blocks

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ADVICE = AdviceShown(
    title="Database connection failed",
    source="Runbook Troubleshooting",
    steps=["Restart the container: `docker-compose restart db`", "Check `max_connections` <now> & later"],
)


def finding(index: int, status: str, rows: int = 3, cell: int = 20) -> Finding:
    return Finding(
        id=f"check_{index}",
        title=f"Check {index} <b>&",
        source="postgres",
        status=status,  # type: ignore[arg-type]
        headline=f"{index} things, above the warn threshold of 0 — pid <{index}>",
        figure=f"{index} things",
        value=float(index),
        threshold="warn > 0",
        reason="refused: cannot connect" if status == "unknown" else None,
        duration_ms=12.5 * index,
        timeout_seconds=5,
        evidence=[
            Evidence(
                title="Slow queries",
                columns=["pid", "running", "query"],
                rows=[[str(1000 + row), "1.5 s", "SELECT " + "x" * cell] for row in range(rows)],
                note="none" if rows == 0 else None,
            )
        ],
        advice=[] if status == "ok" else [ADVICE],
    )


def report(findings: list[Finding]) -> TriageReport:
    return TriageReport(
        status=overall(findings),
        findings=findings,
        window="5m",
        checked_at=NOW,
        duration_ms=812.0,
        checklist="triage_checks.yaml",
    )


def assert_within_slack_limits(message: Message) -> None:
    assert validate_blocks(message.blocks) == [], message.text
    assert len(message.blocks) <= 50
    for block in message.blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= SECTION_LIMIT
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= HEADER_LIMIT
    assert message.text


def test_a_big_report_splits_into_thread_messages_within_limits() -> None:
    statuses = ["critical", "warn", "unknown", "ok"]
    findings = [finding(index, statuses[index % 4], rows=60, cell=90) for index in range(40)]
    findings.sort(key=lambda item: statuses.index(item.status))
    reply = slack(report(findings))
    assert_within_slack_limits(reply.main)
    assert len(reply.thread) > 3
    for message in reply.thread:
        assert_within_slack_limits(message)
    # Every finding appears once in the summary, worst first, and its evidence is in the thread.
    summary = "\n".join(block["text"]["text"] for block in reply.main.blocks if block["type"] == "section")
    assert summary.index("Check 0 ") < summary.index("Check 1 ") < summary.index("Check 3 ")
    assert reply.main.blocks[0]["text"]["text"] == "Triage: CRITICAL"
    thread_text = json.dumps([message.blocks for message in reply.thread])
    for index in range(40):
        assert f"Check {index} &lt;b&gt;&amp;" in thread_text
    assert "1059" in thread_text  # the last row of a 60-row table survives the split
    assert reply.thread[0].text == f"Triage evidence (1/{len(reply.thread)})"


def test_user_text_is_escaped_for_mrkdwn() -> None:
    reply = slack(report([finding(1, "warn")]))
    text = json.dumps([reply.main.blocks, *[message.blocks for message in reply.thread]])
    assert "pid &lt;1&gt;" in text and "<1>" not in text
    assert "&lt;now&gt; &amp; later" in text


def test_summary_fallback_names_the_worst_findings() -> None:
    reply = slack(report([finding(1, "critical"), finding(2, "warn"), finding(3, "ok")]))
    # The fallback text is mrkdwn too (notifications): the titles' markup arrives escaped.
    assert reply.main.text == "Triage: critical — Check 1 &lt;b&gt;&amp;, Check 2 &lt;b&gt;&amp;"


def entries(count: int, text: int = 200) -> list[LogEntry]:
    return [
        LogEntry(
            time=NOW + timedelta(milliseconds=index),
            source="app.log",
            level="error",
            summary=f"GET /api/v1/projects/{index} → 500",
            data={"trace_id": "ab" * 16, "path": f"/api/v1/projects/{index}", "blob": "y" * text},
        )
        for index in range(count)
    ]


SCAN = Scan(
    files=3, files_skipped=1, bytes_read=10_000_000, non_json=2, untimed=0, errors=[], patterns=["/x/*.log"]
)


def test_a_long_lookup_is_capped_in_the_thread_with_a_hint() -> None:
    lookup = LookupReport(
        kind="trace",
        id="ab" * 16,
        entries=entries(1000, text=3000),
        log_lines=1000,
        audit_rows=0,
        left_out=5,
        scan=SCAN,
        audit_problem="refused: cannot connect",
        duration_ms=420.0,
    )
    reply = slack(lookup)
    assert_within_slack_limits(reply.main)
    for message in reply.thread:
        assert_within_slack_limits(message)
    last = reply.thread[-1].blocks[-1]
    assert last["type"] == "context" and "600 more not shown here" in last["elements"][0]["text"]
    main = json.dumps(reply.main.blocks)
    assert "audit log not searched: refused" in main and "990 more in the thread" in main


def test_logs_reply_says_what_was_left_out() -> None:
    logs = LogsReport(
        level="error",
        path="/api",
        since="15m",
        entries=entries(50),
        matched=120,
        left_out=70,
        scan=SCAN,
        duration_ms=30.0,
    )
    reply = slack(logs)
    assert reply.main.blocks[0]["text"]["text"] == "Logs error /api, last 15m"
    assert "*50* newest of *120* matching line(s)" in json.dumps(reply.main.blocks)
    assert "70 older left out" in json.dumps(reply.main.blocks)
    empty = slack(logs.model_copy(update={"entries": [], "matched": 0, "left_out": 0}))
    assert "No line matches." in json.dumps(empty.main.blocks) and empty.thread == []


@pytest.mark.usefixtures("postgres")  # it looks for an open incident
async def test_the_reply_posts_through_slack_with_the_evidence_in_its_thread(fake_slack: FakeSlack) -> None:
    fake_slack.add_channel("C0TRIAGE1", "incidents")
    # Without a pacer (or a 429 retry) post_reply sends its messages at once, past Slack's burst
    # for one channel; this test is about what is posted. Pacing and 429s: test_slack_fake.py.
    fake_slack.set_rate_limits(False)
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.url, timeout=5)
    services = Services.build(make_settings())
    findings = [finding(index, "warn" if index < 25 else "ok", rows=20, cell=80) for index in range(30)]

    async def respond(**kwargs: Any) -> None:
        raise AssertionError("the bot is in the channel: no response_url needed")

    try:
        ts = await post_reply(
            client, respond, "C0TRIAGE1", "triage", COMMANDS["triage"].slack(report(findings)), services
        )  # type: ignore[arg-type]
    finally:
        await services.aclose()
    posted = fake_slack.messages("C0TRIAGE1")
    assert posted[0]["ts"] == ts and posted[0].get("thread_ts") in (None, ts)  # a parent carries its own ts
    assert len(posted) >= 3
    assert all(message.get("thread_ts") == ts for message in posted[1:])
    assert fake_slack.violations == []


def test_terminal_shows_the_table_then_evidence_and_steps_of_what_is_not_ok() -> None:
    console = Console(record=True, width=140, no_color=True)
    terminal(report([finding(1, "critical", rows=2), finding(2, "ok"), finding(3, "unknown")]), console)
    text = console.export_text()
    assert text.startswith("Triage: CRITICAL  1 critical · 1 unknown · 1 ok")
    assert "Next steps — Database connection failed" in text
    assert "1. Restart the container: `docker-compose restart db`" in text
    assert "SELECT xxxx" in text
    assert "3 checks in 812 ms" in text
    lookup = LookupReport(
        kind="request",
        id="req-12345678",
        entries=entries(2),
        log_lines=2,
        audit_rows=0,
        left_out=0,
        scan=SCAN,
        audit_problem=None,
        duration_ms=3.0,
    )
    console = Console(record=True, width=140, no_color=True)
    terminal(lookup, console)
    text = console.export_text()
    assert "Request req-12345678: 2 log line(s), 0 audit row(s)" in text
    assert "GET /api/v1/projects/1 → 500" in text
